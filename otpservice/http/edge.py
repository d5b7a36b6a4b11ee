"""The HTTP server in front of the app: uvicorn, with limits on what a client may send and how slowly."""

from __future__ import annotations

from typing import Any

from otpservice.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options shared by ``serve``, ``dev`` and the test servers."""
    return {"timeout_keep_alive": 5}
