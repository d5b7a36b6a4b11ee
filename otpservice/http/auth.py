"""API-key authentication: each key belongs to one tenant, whose verifications it alone may see."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from otpservice.tenants import Tenant, TenantDirectory, hash_api_key


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or ""."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def api_key_middleware(app: ASGIApp) -> ASGIApp:
    """Controller middleware: the request carries a configured API key; its tenant is kept for the
    handler (:func:`request_tenant`). A request without one is refused 401 before its handler runs.

    A middleware rather than a Litestar guard: Litestar hands every guard a copy of the route
    handler (``copy(self)`` per guard per request), which cost more than the key lookup itself.
    Raised here, the refusal still goes through the app's exception table (problem details).

    Keys are looked up by their SHA-256 (only hashes are configured): timing can reveal at most
    something about a hash of the presented key, which does not help to guess a key.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        tenants: TenantDirectory = scope["litestar_app"].state.tenants
        presented = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                presented = bearer_token(value.decode("latin-1"))
                break
        tenant = tenants.for_key(presented) if presented else None
        if tenant is None:
            raise NotAuthorizedException("send Authorization: Bearer <api key>")
        scope.setdefault("state", {})["tenant"] = tenant
        await app(scope, receive, send)

    return middleware


def request_tenant(connection: ASGIConnection[Any, Any, Any, Any]) -> Tenant:
    """The tenant :func:`api_key_middleware` found for this request."""
    tenant: Tenant = connection.state.tenant
    return tenant


async def require_metrics_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for /metrics: a metrics key (OTP_METRICS_KEYS, good for nothing else) or any API key."""
    presented = bearer_token(connection.headers.get("authorization"))
    if presented:
        metrics_keys: frozenset[str] = connection.app.state.metrics_key_hashes
        tenants: TenantDirectory = connection.app.state.tenants
        if hash_api_key(presented) in metrics_keys or tenants.for_key(presented) is not None:
            return
    raise NotAuthorizedException("send Authorization: Bearer <metrics key or api key>")
