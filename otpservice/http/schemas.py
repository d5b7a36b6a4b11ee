"""The published request and response bodies (they shape openapi.yaml)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, PathParameter
from msgspec import Meta

from otpservice.domain.verification import DeliveryStatus, Verification, VerificationStatus

MetadataKey = Annotated[str, Meta(min_length=1, max_length=64)]
MetadataValue = Annotated[str, Meta(max_length=512)] | int | float | bool | None
_ID_PATTERN = r"^vf_[A-Za-z0-9_\-]+$"  # our ids; also keeps ids off the shard keys ("calls")
VerificationId = Annotated[str, Meta(min_length=1, max_length=64, pattern=_ID_PATTERN)]
VerificationIdInPath = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=_ID_PATTERN)]
IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="Repeat a request safely: the same key with the same body within 24 h returns the "
        "first answer and places no call (scoped to your API client)",
        required=False,
    ),
]


class CreateVerification(msgspec.Struct, forbid_unknown_fields=True):
    """Start a verification: call ``phone`` and read it a fresh code."""

    phone: Annotated[str, Meta(min_length=1, max_length=32, examples=["0987654321", "+84 987 654 321"])]
    code_length: Annotated[int, Meta(ge=4, le=10)] | None = None
    ttl_seconds: Annotated[int, Meta(ge=60, le=600)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=20)] | None = None
    client_ip: (
        Annotated[
            str,
            Meta(
                min_length=2,
                max_length=45,
                description="The end user's IP address, for the per-client budget (never taken from "
                "X-Forwarded-For); IPv6 addresses count by their /64",
                examples=["203.0.113.7", "2001:db8::1"],
            ),
        ]
        | None
    ) = None
    code: (
        Annotated[
            str,
            Meta(
                pattern=r"^[0-9]{4,10}$",
                description="The code to read (SMS fallback: the code the SMS carried); only for "
                "tenants with allow_custom_code, else 403 custom_code_not_allowed",
            ),
        ]
        | None
    ) = None


class ResendCode(msgspec.Struct, forbid_unknown_fields=True):
    """A resend body: only for a verification whose code the tenant chose, which must be repeated."""

    code: Annotated[str, Meta(pattern=r"^[0-9]{4,10}$")] | None = None


class VerifyCode(msgspec.Struct, forbid_unknown_fields=True):
    """A code the user typed, for the verification ``id``."""

    id: VerificationId
    code: Annotated[str, Meta(min_length=1, max_length=32)]


class DeliveryView(msgspec.Struct):
    """The latest call placed for the verification."""

    status: DeliveryStatus
    call_id: str | None
    provider_status: str | None
    duration_seconds: int | None
    reason: str | None
    updated_at: datetime


class VerificationView(msgspec.Struct):
    """A verification as clients see it; the code never appears."""

    id: str
    status: VerificationStatus
    phone: str
    channel: str
    code_length: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    attempts: int
    max_attempts: int
    attempts_remaining: int
    sends: int
    resend_available_at: datetime
    metadata: dict[str, MetadataValue]
    delivery: DeliveryView

    @classmethod
    def of(cls, verification: Verification, **extra: object) -> Self:
        """The view of a domain verification (field names match, so the copy is by name)."""
        delivery = DeliveryView(
            **{name: getattr(verification.delivery, name) for name in DeliveryView.__struct_fields__}
        )
        copied = {name: getattr(verification, name) for name in cls.__struct_fields__ if name not in extra}
        return cls(**(copied | extra | {"delivery": delivery}))


class VerifyResult(VerificationView):
    """The verification after a code was checked, and whether that code was right."""

    valid: bool = False


class WebhookEvent(msgspec.Struct):
    """The body POSTed to a tenant's webhook: what happened, when, and the verification as GET
    showed it at that moment (never a code, never more of the number than GET shows)."""

    type: str
    timestamp: datetime
    data: VerificationView


def webhook_event_body(kind: str, at: datetime, verification: Verification) -> bytes:
    return msgspec.json.encode(WebhookEvent(kind, at, VerificationView.of(verification.as_of(at))))


class CallbackAck(msgspec.Struct):
    """What a provider callback did: ``recorded``, ``duplicate`` or ``stale`` (older or another call)."""

    outcome: str
    verification_id: str


class Health(msgspec.Struct):
    status: str


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details; ``code`` is the stable machine-readable identifier."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    id: str | None = None
    call_placed: bool | None = None
    call_may_have_rung: bool | None = None
    reason: str | None = None
    resend_available_at: str | None = None
    locked_until: str | None = None
    errors: list[FieldError] | None = None


_PROBLEM_DESCRIPTIONS = {
    400: "malformed_body: the body is not JSON",
    401: "unauthorized (API key) or invalid_callback_credentials (callback)",
    404: "not_found: no such verification (never created, or past its retention)",
    409: "the verification is no longer pending; code is its status "
    "(approved, canceled, expired, max_attempts_reached, failed); or attempts_in_flight (with Retry-After): "
    "every attempt left is being checked by other requests; or phone_locked (verify: too many wrong codes "
    "for the number, with locked_until); or idempotency_in_progress (with Retry-After): a request with "
    "this Idempotency-Key is still running",
    422: "validation_error (naming the fields), invalid_phone, invalid_code_format, invalid_client_ip, "
    "custom_code_mismatch, idempotency_key_reused, provider_rejected "
    "(carries the verification id and the provider's reason) or invalid_callback",
    403: "custom_code_not_allowed: this API client may not choose the code",
    429: "resend_too_soon, max_sends_reached, or a budget refused the call before anything was dialled, "
    "with Retry-After: phone_rate_limited, client_rate_limited, prefix_rate_limited, "
    "tenant_call_cap_reached, or phone_locked (too many wrong codes for the number; with locked_until)",
    503: "provider_unavailable (with the id and call_may_have_rung when a verification exists), "
    "storage_unavailable (with the id when one exists, and call_placed when a call is involved), "
    "check_not_recorded (the code was not judged; no attempt spent), or call_budget_exhausted (the "
    "service-wide call breaker is open), all with Retry-After",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem documents an endpoint can answer."""
    return {
        status: ResponseSpec(
            Problem,
            description=_PROBLEM_DESCRIPTIONS[status],
            media_type="application/problem+json",
            generate_examples=False,
        )
        for status in statuses
    }
