"""Shorten personal data and credentials before they reach a log line or an operator's screen."""

from __future__ import annotations

from otpservice.domain.phone import mask_phone


def mask_call_id(call_id: str) -> str:
    """Call ids end with the callee's number (``1_1_1_5_<uuid>_0987654321``): mask that part."""
    head, separator, tail = call_id.rpartition("_")
    if not separator or not tail.isdigit():
        return call_id
    return head + separator + mask_phone(tail)


def mask_secret(secret: str) -> str:
    """A credential shown as its first four characters and its length."""
    if len(secret) <= 8:
        return "*" * len(secret)
    return f"{secret[:4]}…({len(secret)} chars)"
