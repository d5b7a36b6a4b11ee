"""Refuse a check before the app spends anything on it, while this worker's hashing is full.

Most checks are shed earlier still, by the server protocol from the parsed request head
(:mod:`otpservice.http.edge`); this middleware takes those it cannot: a check pipelined behind
another request, or one waiting for ``100 Continue``. Through the whole app (routing, body decoding,
dependencies, the problem plugin, the access log) a refusal cost about 0.9 ms of the event loop's
CPU (bench/verify_overload); here it costs a dictionary lookup and two sends. The service's own
admission (before the attempt is reserved) still decides every check that gets in.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from otpservice.domain.errors import Overloaded
from otpservice.http.problems import domain_title, problem_body
from otpservice.service import metrics
from otpservice.service.hashing import HashingPool

_REFUSAL = Overloaded()
# The refusal's body and headers, also written by the server protocol's own shedding (edge.py).
OVERLOADED_BODY = problem_body(503, _REFUSAL.code, domain_title(Overloaded), _REFUSAL.detail)
OVERLOADED_HEADERS = [
    (b"content-type", b"application/problem+json"),
    (b"content-length", str(len(OVERLOADED_BODY)).encode()),
    (b"retry-after", str(_REFUSAL.retry_after_seconds).encode()),
]


def shed_checks_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "POST" and scope["path"] == "/verify":
            hashing: HashingPool | None = getattr(scope["app"].state, "hashing", None)
            if hashing is not None and hashing.full:
                metrics.CHECKS_SHED.inc()
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 503,
                    # The body is left unread (a client awaiting 100 Continue may still send it):
                    # what comes next on the connection cannot be told from a next request.
                    "headers": [*OVERLOADED_HEADERS, (b"connection", b"close")],
                }
                body: HTTPResponseBodyEvent = {
                    "type": "http.response.body",
                    "body": OVERLOADED_BODY,
                    "more_body": False,
                }
                await send(start)
                await send(body)
                return
        await app(scope, receive, send)

    return middleware
