"""One log line per request, naming the route template, never the raw path or any body.

Litestar's logging middleware logs request and response bodies by default (a verify body carries
the code) and raw paths (a callback path carries its credential), so this small one is used instead.
"""

from __future__ import annotations

import time

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("otpservice.access")


def access_log_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, remember_status)
        finally:
            log.info(
                "http.request",
                method=scope.get("method", ""),
                route=scope.get("path_template") or "unmatched",
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    return middleware
