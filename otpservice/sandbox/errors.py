"""The provider's error envelope, and the exception that carries one out of a handler."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class ProviderError(Exception):
    """An error the sandbox answers in the provider's envelope with ``status_code``."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def error_envelope(status_code: int, detail: str) -> dict[str, Any]:
    """The provider's error body; "messsage" (three s) is the provider's own spelling."""
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        phrase = "Error"
    return {"messsage": phrase, "code": status_code, "status": False, "data": {"error": detail}}
