"""Run the Autocall sandbox (and a callback receiver) on real loopback ports, for tests."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from otpservice.sandbox.app import create_sandbox_app
from otpservice.sandbox.config import SandboxConfig
from tests.support.servers import serve_in_thread

# Loopback HTTP needs no TLS; one shared context spares each admin request httpx's CA-bundle load.
TLS_CONTEXT = ssl.create_default_context()


@dataclass(slots=True)
class SandboxHandle:
    """A running sandbox: its base URL and its live config (change it to flip faults in-process)."""

    url: str
    config: SandboxConfig

    def calls(self, phone: str | None = None) -> list[dict[str, Any]]:
        """``GET /_sandbox/calls``: every call placed (to ``phone`` only, if given)."""
        response = httpx.get(
            f"{self.url}/_sandbox/calls", params={"phone": phone} if phone else None, verify=TLS_CONTEXT
        )
        response.raise_for_status()
        calls: list[dict[str, Any]] = response.json()["calls"]
        return calls

    def wait_until_ended(self, call_ids: Iterable[str], timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """Wait until every call in ``call_ids`` has a final status; return their summaries by id."""
        wanted = set(call_ids)
        deadline = time.monotonic() + timeout
        while True:
            ended = {call["call_id"]: call for call in self.calls() if call["call_id"] in wanted}
            if all(ended.get(call_id, {}).get("status") for call_id in wanted):
                return ended
            if time.monotonic() > deadline:
                raise TimeoutError(f"calls still in progress after {timeout} s")
            time.sleep(0.02)


@contextmanager
def running_sandbox(config: SandboxConfig | None = None) -> Iterator[SandboxHandle]:
    """Serve a fresh sandbox on 127.0.0.1 for the duration of the block."""
    config = config or SandboxConfig()
    with serve_in_thread(create_sandbox_app(config, TLS_CONTEXT)) as url:
        try:
            yield SandboxHandle(url=url, config=config)
        finally:
            # Releases requests still held by the hang fault so the server can shut down.
            config.provider_faults.hang = False


@dataclass(slots=True)
class ReceivedCallback:
    """One request the callback receiver got."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class CallbackReceiver:
    """A webhook endpoint that records every request and answers 200."""

    url: str
    received: list[ReceivedCallback] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[ReceivedCallback]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedCallback]:
        """Wait until at least ``count`` requests arrived; return them all (fewer on timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.snapshot()


@contextmanager
def running_callback_receiver() -> Iterator[CallbackReceiver]:
    """Serve a recording webhook on 127.0.0.1; its ``url`` accepts any path."""
    receiver = CallbackReceiver(url="")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        record = ReceivedCallback(
            scope["method"], scope["path"], scope["query_string"].decode(), headers, body
        )
        with receiver._lock:
            receiver.received.append(record)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    with serve_in_thread(app) as url:
        receiver.url = url
        yield receiver
