"""Turn the provider's JSON into typed results, leniently: the reference's examples are not reliable.

Both envelopes are accepted: the reference's ``{"data": ...}`` and the older
``{"message"|"messsage": ..., "code": ..., "status": ..., "data": ...}``. Success or failure is keyed
off the HTTP status, never off the envelope's own ``status``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import httpx

from otpservice.adapters.autocall.models import (
    AccessToken,
    CalleeRejection,
    CallPlacement,
    CallReport,
    CallStatus,
    ProviderMalformedResponse,
    TemplateImport,
)

VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")
# Used when the token answer has no usable ``expire_at``: the shortest lifetime the provider documents.
DEFAULT_TOKEN_LIFETIME_SECONDS = 86400.0
_MAX_MESSAGE_CHARS = 300


def response_data(response: httpx.Response) -> dict[str, object]:
    """The ``data`` object of a successful answer; ProviderMalformedResponse when there is none."""
    body = _json_object(response)
    if body is None:
        content_type = response.headers.get("content-type", "no content type")
        raise ProviderMalformedResponse(
            f"HTTP {response.status_code} answer is not a JSON object ({content_type})",
            status_code=response.status_code,
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderMalformedResponse(
            f"HTTP {response.status_code} answer has no data object", status_code=response.status_code
        )
    return data


def any_answer(response: httpx.Response) -> dict[str, object]:
    """What a successful answer of unknown shape holds (the template import's, notes defect 5): its
    data object, else the whole JSON object, else nothing; a 2xx is the success, whatever it says."""
    body = _json_object(response)
    if body is None:
        return {}
    data = body.get("data")
    return data if isinstance(data, dict) else body


def error_message(response: httpx.Response) -> str:
    """The provider's own words for a failed request, from whichever envelope it used."""
    body = _json_object(response) or {}
    data = body.get("data")
    candidates = [data.get("error"), data.get("message")] if isinstance(data, dict) else []
    candidates += [body.get("message"), body.get("messsage"), body.get("error")]  # "messsage": sic
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()[:_MAX_MESSAGE_CHARS]
    return f"HTTP {response.status_code} without a message"


def parse_token(data: dict[str, object], *, obtained_at: float) -> AccessToken:
    """``expire_at`` is a lifetime in seconds (notes defect 4), not a timestamp."""
    value = data.get("access_token")
    if not isinstance(value, str) or not value.strip():
        raise ProviderMalformedResponse("token answer has no access_token")
    lifetime = _number(data.get("expire_at"))
    if lifetime is None or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME_SECONDS
    return AccessToken(value=value.strip(), lifetime_seconds=lifetime, obtained_at=obtained_at)


def parse_placement(data: dict[str, object], *, default_campaign_id: str) -> CallPlacement:
    """Accepted call ids and per-callee rejections; an answer saying nothing about callees is malformed."""
    results = data.get("results")
    if not isinstance(results, dict) or not ({"success", "fail"} & results.keys()):
        raise ProviderMalformedResponse("call placement answer has no results.success or results.fail")
    success = results.get("success")
    if isinstance(success, str):  # one call id, not in a list: still the id
        success = [success]
    accepted = (
        tuple(item for item in success if isinstance(item, str) and item) if isinstance(success, list) else ()
    )
    return CallPlacement(
        campaign_id=_text(data.get("campaign_id")) or default_campaign_id,
        accepted=accepted,
        rejected=tuple(_rejections(results.get("fail"))),
    )


def parse_template_import(name: str, data: dict[str, object]) -> TemplateImport:
    """The import answer's real shape is unknown (notes defect 5): keep it whole."""
    return TemplateImport(name=_text(data.get("name")) or name, raw=data)


def parse_report(data: dict[str, object], *, requested_call_id: str) -> CallReport:
    """One CDR; a missing or empty status means the call has not ended yet."""
    provider_status = _text(data.get("status"))
    return CallReport(
        call_id=_text(data.get("id")) or _text(data.get("call_id")) or requested_call_id,
        campaign_id=_text(data.get("campaign_id")) or "",
        user_id=_text(data.get("user_id")),
        phone_number=_text(data.get("phone_number")) or "",
        call_type=_text(data.get("type")),
        provider_status=provider_status,
        status=CallStatus.from_provider(provider_status) if provider_status else None,
        keypress=_text(data.get("keypress")),
        params=_params(data.get("param", data.get("params"))),
        created_at=parse_provider_time(data.get("created_at")),
        started_at=parse_provider_time(data.get("started_at")),
        ended_at=parse_provider_time(data.get("ended_at")),
        duration_seconds=_call_seconds(data.get("duration")),
        code_otp=_text(data.get("code_otp")),
    )


def parse_provider_time(value: object) -> datetime | None:
    """``YYYY-MM-DD HH:MM:SS`` without a zone is Vietnam time; empty, zero or unreadable -> None."""
    if not isinstance(value, str) or not value.strip() or value.startswith("0000"):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=VIETNAM_TIME)


def _json_object(response: httpx.Response) -> dict[str, object] | None:
    try:
        body = json.loads(response.content)
    # ValueError: truncated JSON, undecodable bytes; RecursionError: nesting deeper than json can read
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _rejections(fail: object) -> list[CalleeRejection]:
    """``fail`` is a list of one-key ``{phone: reason}`` objects; also take a plain object or bare phones."""
    entries = [fail] if isinstance(fail, dict) else fail if isinstance(fail, list) else []
    rejections = []
    for entry in entries:
        if isinstance(entry, dict):
            rejections += [
                CalleeRejection(str(phone), _text(reason) or "") for phone, reason in entry.items()
            ]
        elif isinstance(entry, str | int):
            rejections.append(CalleeRejection(str(entry), ""))
    return rejections


def _params(value: object) -> dict[str, object]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except (ValueError, RecursionError):
            return {}
        if isinstance(decoded, dict):
            return decoded
    return {}


def _text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int | float):
        text = str(value).strip()
        return text or None
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _call_seconds(value: object) -> int | None:
    """A call's duration in whole seconds, under a day as a callback's must be; else unknown (a
    provider answering 1e300 must not put a 301-digit number in the record)."""
    number = _number(value)
    return int(number) if number is not None and 0 <= number < 86400 else None
