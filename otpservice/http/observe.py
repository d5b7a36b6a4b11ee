"""Each request observed once: one access log line and the request metrics, naming the route template.

The log line never holds the raw path or any body: Litestar's logging middleware logs request and
response bodies by default (a verify body carries the code) and raw paths (a callback path carries
its credential). The metrics are those Litestar's Prometheus middleware records, under the same
names and labels (``otp_http_requests_total``, ``otp_http_request_duration_seconds``,
``otp_http_requests_in_progress``, ``otp_http_requests_error_total``; labels method, path, status_code,
app_name). That middleware is not used because it cost about 0.12 ms of the event loop per request
(a fourth of a /healthz, measured with bench.verify_cpu's setup): it builds a Request and looks up
four labelled children on every call. Here the children are looked up once per route and status.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

from otpservice.http.head import request_method

log = structlog.get_logger("otpservice.access")

_LABELS = ["method", "path", "status_code", "app_name"]
_APP = "otpservice"
REQUESTS = Counter("otp_http_requests", "Total requests", _LABELS)
REQUEST_TIME = Histogram("otp_http_request_duration_seconds", "Request duration, in seconds", _LABELS)
IN_PROGRESS = Gauge(
    "otp_http_requests_in_progress",
    "Total requests currently in progress",
    _LABELS,
    multiprocess_mode="livesum",
)
ERRORS = Counter("otp_http_requests_error", "Total errors in requests", _LABELS)

# Labelled children by (method, route, status): route templates and statuses are few.
_finished: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
_running: dict[tuple[str, str], Any] = {}


def _finished_children(method: str, route: str, status: int) -> tuple[Any, Any, Any]:
    key = (method, route, status)
    children = _finished.get(key)
    if children is None:
        values = (method, route, str(status), _APP)
        children = _finished[key] = (
            REQUESTS.labels(*values),
            REQUEST_TIME.labels(*values),
            ERRORS.labels(*values) if status >= 500 else None,
        )
    return children


def _running_child(method: str, route: str) -> Any:
    child = _running.get((method, route))
    if child is None:
        # Litestar's middleware labelled the gauge with the status it assumed at the start: 200.
        child = _running[(method, route)] = IN_PROGRESS.labels(method, route, "200", _APP)
    return child


def observe_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        method = request_method(scope)
        route = scope.get("path_template") or "unmatched"
        status = 500
        duration = 0.0

        async def observed_send(message: Message) -> None:
            nonlocal status, duration
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                duration = time.perf_counter() - started
            await send(message)

        running = _running_child(method, route)
        running.inc()
        try:
            await app(scope, receive, observed_send)
        except HTTPException as exc:
            # raised before any response (the API key check): the app's exception table answers it
            # further out, with this status
            status = exc.status_code
            raise
        finally:
            running.dec()
            count, timing, errors = _finished_children(method, route, status)
            count.inc()
            timing.observe(duration)
            if errors is not None:
                errors.inc()
            log.info(
                "http.request",
                method=method,
                route=route,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    return middleware
