"""HEAD answered wherever GET is (RFC 9110 requires both of a general-purpose server).

Litestar cannot do it itself: it refuses a HEAD handler whose response has a body, and it routes
before any middleware runs, so a HEAD request never reaches one and is answered 405. Load balancers
and uptime checkers probe with HEAD, so the app is wrapped here, outside Litestar: a HEAD request is
handed to the app as a GET, and only its head is sent, with the Content-Length the GET would have.
Every ``Allow`` header that names GET names HEAD too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import (
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Message,
    Receive,
    Scope,
    Send,
)

# Marks the scope of a HEAD request handed to the app as a GET, for the access log and metrics.
HEAD_REQUEST = "otp.head_request"


def request_method(scope: HTTPScope) -> str:
    """The method the client sent (HEAD for a HEAD request the app serves as GET)."""
    return "HEAD" if HEAD_REQUEST in scope else scope["method"]


class HeadServingLitestar(Litestar):
    """The app, answering HEAD as GET without the body."""

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        request, respond = cast("HTTPScope", scope), cast("Send", send)
        if request["method"] == "HEAD":
            # A copy: the server keeps its own scope, whose method stays HEAD.
            as_get = cast("HTTPScope", {**request, "method": "GET", HEAD_REQUEST: True})
            await super().__call__(as_get, receive, _head_only(respond))
        else:
            await super().__call__(request, receive, _head_allowed(respond))


def _head_only(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": _with_head_allowed(message.get("headers", []))}
        elif message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


def _head_allowed(send: Send) -> Send:
    async def send_allowing_head(message: Message) -> None:
        # Allow comes with 405 answers and with the 204 of OPTIONS only; other answers pass untouched.
        if message["type"] == "http.response.start" and message["status"] in (204, 405):
            message = {**message, "headers": _with_head_allowed(message.get("headers", []))}
        await send(message)

    return send_allowing_head


def _with_head_allowed(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers, with HEAD after GET in Allow."""
    listed = list(headers)
    for index, (name, value) in enumerate(listed):
        if name.lower() == b"allow":
            methods = [method.strip() for method in value.split(b",")]
            if b"GET" in methods and b"HEAD" not in methods:
                methods.insert(methods.index(b"GET") + 1, b"HEAD")
                listed[index] = (name, b", ".join(methods))
    return listed
