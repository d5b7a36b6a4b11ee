"""The request class of the app."""

from __future__ import annotations

from typing import Any

from litestar import Request


class OtpRequest(Request[Any, Any, Any]):
    """Litestar's request."""
