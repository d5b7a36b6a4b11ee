"""The verification and its state machine: what a verification is and which moves it may make.

Pure rules: no I/O, no framework. The store applies these moves atomically; this module names them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any


class VerificationStatus(enum.StrEnum):
    """Where a verification stands. Only ``pending`` can still change."""

    PENDING = "pending"
    APPROVED = "approved"
    CANCELED = "canceled"
    EXPIRED = "expired"
    MAX_ATTEMPTS_REACHED = "max_attempts_reached"
    FAILED = "failed"


class DeliveryStatus(enum.StrEnum):
    """What became of the voice call that carries the code."""

    QUEUED = "queued"
    CALLING = "calling"
    # The provider never told us whether it placed the call (a timeout, an unreadable answer, a crash
    # between placing and recording). Its code is accepted; a callback can still settle it.
    UNKNOWN = "unknown"
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CONGESTION = "congestion"
    INVALID_NUMBER = "invalid_number"
    REJECTED = "rejected"
    ERROR = "error"
    CANCELED = "canceled"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """A final delivery status is never overwritten by a later (or late) report."""
        return self not in (DeliveryStatus.QUEUED, DeliveryStatus.CALLING, DeliveryStatus.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The latest call placed for a verification, as far as the provider has told us."""

    send_seq: int  # which call of the verification this is (1 for the first)
    status: DeliveryStatus
    call_id: str | None
    provider_status: str | None
    duration_seconds: int | None
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Verification:
    """A one-time-code verification as stored; the code itself is never part of it."""

    id: str
    status: VerificationStatus
    phone: str
    code_length: int
    ttl_seconds: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    attempts: int
    max_attempts: int
    sends: int
    resend_available_at: datetime
    delivery: Delivery
    metadata: dict[str, Any] = field(default_factory=dict)
    channel: str = "voice"
    tenant: str = "default"  # whose key created it; other tenants cannot see it
    custom_code: bool = False  # the tenant chose the code (SMS fallback); a resend reads it again

    def as_of(self, now: datetime) -> Verification:
        """The verification as seen at ``now``: a pending one past its expiry is expired.

        Expiry is decided by the clock, not by a write, so nothing needs to run when a code expires.
        """
        if self.status is VerificationStatus.PENDING and now >= self.expires_at:
            return replace(self, status=VerificationStatus.EXPIRED)
        return self

    @property
    def attempts_remaining(self) -> int:
        return max(0, self.max_attempts - self.attempts)
