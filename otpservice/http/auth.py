"""API-key authentication for the client-facing endpoints."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from otpservice.settings import Settings


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or ""."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: the request carries one of the configured API keys (compared in constant time)."""
    settings: Settings = connection.app.state.settings
    presented = bearer_token(connection.headers.get("authorization")).encode()
    matched = False
    for key in settings.api_keys:  # no early exit: the time taken does not tell which key was close
        matched |= hmac.compare_digest(presented, key.encode())
    if not presented or not matched:
        raise NotAuthorizedException("send Authorization: Bearer <api key>")
