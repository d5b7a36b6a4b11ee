"""A real webhook receiver on a loopback port: verifies every signature with `standardwebhooks`."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook

from otpservice.dev_receiver import request_of, serve_lifespan
from tests.support.redis_servers import wait_until
from tests.support.servers import serve_in_thread


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Receiver:
    """What the receiver was sent. ``fail_first``: answer 500 to that many deliveries first."""

    url: str
    secret: str
    fail_first: int = 0
    hang_first: float = 0.0  # seconds the first delivery is held before it is answered
    attempts: list[dict[str, str]] = field(default_factory=list)  # headers of every delivery tried
    events: list[dict[str, Any]] = field(default_factory=list)  # bodies accepted, in order
    ids: list[str] = field(default_factory=list)  # webhook-id of each accepted event
    arrived_at: list[float] = field(default_factory=list)  # time.time() of each accepted event
    bad_signatures: int = 0
    arrived: int = 0  # deliveries begun, counted before any is held
    lock: threading.Lock = field(default_factory=threading.Lock)

    def types(self, verification_id: str | None = None) -> list[str]:
        with self.lock:
            return [e["type"] for e in self.events if verification_id in (None, e["data"]["id"])]

    def wait_for(self, count: int, verification_id: str | None = None, timeout: float = 10) -> list[str]:
        """The accepted event types (of one verification), once there are ``count``."""
        wait_until(lambda: len(self.types(verification_id)) >= count, timeout, f"{count} events")
        return self.types(verification_id)


@contextmanager
def running_receiver(fail_first: int = 0, hang_first: float = 0.0) -> Iterator[Receiver]:
    receiver = Receiver(url="", secret=new_secret(), fail_first=fail_first, hang_first=hang_first)
    verifier = Webhook(receiver.secret)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body, headers = await request_of(scope, receive)
        with receiver.lock:
            receiver.arrived += 1
            hang, receiver.hang_first = receiver.hang_first, 0.0
        if hang:  # a delivery held open, so that its sender can die holding it; it counts for nothing
            await asyncio.sleep(hang)
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        status = 204
        with receiver.lock:
            receiver.attempts.append(headers)
            try:
                verifier.verify(body, headers)
            except Exception:
                receiver.bad_signatures += 1
                status = 400
            else:
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    status = 500
                else:
                    receiver.events.append(json.loads(body))
                    receiver.arrived_at.append(time.time())
                    receiver.ids.append(headers["webhook-id"])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve_in_thread(app) as url:
        receiver.url = url + "/hooks"
        yield receiver
