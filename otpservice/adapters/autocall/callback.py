"""Reading the provider's call-ended callback, whose body format the provider does not document.

Accepted shapes: the CDR bare, the CDR inside ``{"data": ...}``, and the older API's body
(``call_id``, ``status`` of ``Success``/``Fail``). Status words are matched in any case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from otpservice.adapters.autocall.models import CallStatus

_BODY_KEY_FIELDS = ("callback_apikey", "apikey", "api_key")


class MalformedCallback(ValueError):
    """The body is not a call report we can read."""


@dataclass(frozen=True, slots=True)
class CallbackReport:
    """The outcome of one call, as a callback told it."""

    call_id: str
    status: CallStatus
    provider_status: str
    duration_seconds: int | None


def body_api_key(body: object) -> str | None:
    """The ``callback_apikey`` if the provider put it in the body (either shape)."""
    for record in _records(body):
        for name in _BODY_KEY_FIELDS:
            value = record.get(name)
            if isinstance(value, str) and value:
                return value
    return None


def parse_callback(body: object) -> CallbackReport:
    """Extract call id, status and duration from any known callback shape."""
    records = _records(body)
    if not records:
        raise MalformedCallback("the callback body is not a JSON object")
    record = records[-1]
    call_id = record.get("id", record.get("call_id"))
    if not isinstance(call_id, str) or not call_id.strip() or len(call_id) > 256:
        raise MalformedCallback("the callback carries no call id")
    word = record.get("status")
    if not isinstance(word, str) or len(word) > 64:
        raise MalformedCallback("the callback carries no status")
    status = CallStatus.from_provider(word)
    if status is None:
        raise MalformedCallback(f"unknown call status {word[:32]!r}")
    return CallbackReport(
        call_id=call_id.strip(),
        status=status,
        provider_status=word.strip(),
        duration_seconds=_duration(record.get("duration")),
    )


def _records(body: object) -> list[Mapping[str, object]]:
    """The outer object and, when present, the one inside ``data``."""
    if not isinstance(body, Mapping):
        return []
    records: list[Mapping[str, object]] = [body]
    inner = body.get("data")
    if isinstance(inner, Mapping):
        records.append(inner)
    return records


def _duration(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():  # 15.0, as a report may say it
        value = int(value)
    if isinstance(value, int) and 0 <= value < 86400:
        return value
    # ASCII digits only: str.isdigit() also takes superscripts and circled digits, which int() refuses
    if (
        isinstance(value, str)
        and value.strip().isascii()
        and value.strip().isdigit()
        and len(value.strip()) < 6
    ):
        return int(value.strip())
    return None
