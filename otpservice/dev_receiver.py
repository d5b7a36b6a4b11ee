"""A webhook receiver for dev mode: verifies each event's signature and prints it, one line each.

It is what a backend integrator would write, in a few lines, so a newcomer running ``otpservice dev``
sees the events arrive without writing one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI server's lifespan messages (a bare ASGI app has nothing to start or stop)."""
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


async def request_of(scope: dict[str, Any], receive: Any) -> tuple[bytes, dict[str, str]]:
    """An ASGI request's whole body and its headers."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return body, {name.decode(): value.decode() for name, value in scope["headers"]}


def receiver_app(secret: str, show: Callable[[str], None]) -> Any:
    """An ASGI app answering 204 to events signed with ``secret`` (400 otherwise), showing each."""
    verifier = Webhook(secret)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body, headers = await request_of(scope, receive)
        try:
            event = verifier.verify(body, headers)
        except WebhookVerificationError as exc:
            show(f"webhook REFUSED ({exc})")
            status = 400
        else:
            data = event["data"]
            show(
                f"webhook {event['type']:<35} {data['id']} status={data['status']} "
                f"delivery={data['delivery']['status']} (signature verified, id {headers['webhook-id']})"
            )
            status = 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps({}).encode() if status == 400 else b""})

    return app
