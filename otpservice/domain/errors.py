"""Failures of the verification rules, each with the stable machine-readable code clients key on.

The HTTP layer maps these to problem details in one table; nothing here knows about HTTP.
"""

from __future__ import annotations

from datetime import datetime

from otpservice.domain.clock import to_iso
from otpservice.domain.verification import VerificationStatus


class VerificationError(Exception):
    """Base of every rule violation; ``code`` is the stable identifier clients see."""

    code: str = "error"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class VerificationNotFound(VerificationError):
    code = "not_found"

    def __init__(self, verification_id: str):
        super().__init__("no verification with this id (never created, or past its retention)")
        self.verification_id = verification_id


class InvalidPhone(VerificationError):
    code = "invalid_phone"


class InvalidClientIp(VerificationError):
    code = "invalid_client_ip"


class InvalidCodeFormat(VerificationError):
    code = "invalid_code_format"


class NotPending(VerificationError):
    """The verification can no longer change; its status is the code."""

    def __init__(self, status: VerificationStatus):
        super().__init__(f"the verification is {status.value} and can no longer be used")
        self.status = status
        self.code = status.value


class AttemptsInFlight(VerificationError):
    """Every attempt left is being checked right now; one may come free when those checks end."""

    code = "attempts_in_flight"

    def __init__(self, retry_after_seconds: int):
        super().__init__("every remaining attempt is being checked right now; try again shortly")
        self.retry_after_seconds = retry_after_seconds


class CheckNotRecorded(VerificationError):
    """Nothing was judged or spent: the code was checked after its attempt had been released, or
    (``code_pending``) the newest call's code is not in storage (still being written, being
    repaired after a storage failure, or lost with its writes in a failover: a new call mends that)."""

    code = "check_not_recorded"

    def __init__(self, verification_id: str, *, code_pending: bool = False):
        super().__init__(
            "the code of the latest call is not in storage yet, so no code can be judged; no attempt was "
            "spent; submit it again shortly, and if this goes on, request a new call"
            if code_pending
            else "the code could not be judged in time; no attempt was spent; submit it again"
        )
        self.verification_id = verification_id
        self.retry_after_seconds = 1


class Overloaded(VerificationError):
    """More checks are waiting for a hashing thread than this worker takes: refused before any attempt."""

    code = "overloaded"

    def __init__(self) -> None:
        super().__init__("too many codes are being checked right now; no attempt was spent; retry shortly")
        self.retry_after_seconds = 1


class CodeLost(VerificationError):
    """The call may ring, but its code can never be checked: its hash could not be computed (the
    send is failed, a first call failing its verification, and its call stays counted), or, with
    ``record_lost``, storage lost the whole verification after the call went out (a failover
    dropped its latest writes)."""

    code = "code_lost"

    def __init__(self, verification_id: str, *, record_lost: bool = False):
        super().__init__(
            "the call went out, but storage lost this verification meanwhile (a failover dropped its "
            "latest writes), so the code it reads cannot be checked; start a new verification (with a new "
            "Idempotency-Key, if this request had one)"
            if record_lost
            else "the call may ring, but its code could not be prepared and cannot be checked; start "
            "again (a resend: send it again)"
        )
        self.verification_id = verification_id
        self.retry_after_seconds = 2


class ResendTooSoon(VerificationError):
    code = "resend_too_soon"

    def __init__(self, available_at: datetime, retry_after_seconds: int):
        super().__init__(f"a new call can be requested at {to_iso(available_at)}")
        self.available_at = available_at
        self.retry_after_seconds = retry_after_seconds


class SendLimitReached(VerificationError):
    """The verification's call budget is spent (toll-fraud protection)."""

    code = "max_sends_reached"


class BudgetSpent(VerificationError):
    """A call budget (toll-fraud and cost protection) refused the call before anything was dialled."""

    def __init__(self, detail: str, retry_after_seconds: int):
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class PhoneRateLimited(BudgetSpent):
    """The number received as many calls as its limits allow (OTP_PHONE_LIMITS)."""

    code = "phone_rate_limited"

    def __init__(self, retry_after_seconds: int):
        super().__init__(
            "this number has received too many verification calls; try again later", retry_after_seconds
        )


class ClientRateLimited(BudgetSpent):
    """The end user's address asked for as many calls as it may (OTP_CLIENT_IP_LIMITS)."""

    code = "client_rate_limited"

    def __init__(self, retry_after_seconds: int):
        super().__init__(
            "this client has asked for too many verification calls; try again later", retry_after_seconds
        )


class PrefixRateLimited(BudgetSpent):
    """Numbers of one range received as many calls as they may (OTP_PREFIX_LIMITS)."""

    code = "prefix_rate_limited"

    def __init__(self, retry_after_seconds: int):
        super().__init__(
            "numbers in this range have received too many verification calls; try again later",
            retry_after_seconds,
        )


class TenantCallCapReached(BudgetSpent):
    """The tenant placed its daily_call_cap calls today (UTC)."""

    code = "tenant_call_cap_reached"

    def __init__(self, retry_after_seconds: int):
        super().__init__("this API client has used its calls for today (UTC)", retry_after_seconds)


class CallBudgetExhausted(BudgetSpent):
    """The service placed OTP_GLOBAL_CALLS_PER_MINUTE calls in the last minute: the breaker is open."""

    code = "call_budget_exhausted"

    def __init__(self, retry_after_seconds: int):
        super().__init__(
            "the service's call budget is spent for the moment; try again shortly", retry_after_seconds
        )


class PhoneLocked(VerificationError):
    """Too many wrong codes were entered for the number (OTP_PHONE_FAILURE_LOCK), across its verifications."""

    code = "phone_locked"

    def __init__(self, locked_until: datetime, retry_after_seconds: int):
        super().__init__(f"too many wrong codes for this number; locked until {to_iso(locked_until)}")
        self.locked_until = locked_until
        self.retry_after_seconds = retry_after_seconds


class PhoneLockedForChecks(PhoneLocked):
    """The same lock met by a code check: the verification exists but cannot take codes now (409)."""


class CustomCodeNotAllowed(VerificationError):
    """Only tenants with allow_custom_code may choose the code."""

    code = "custom_code_not_allowed"

    def __init__(self) -> None:
        super().__init__("this API client may not choose the code (allow_custom_code is off)")


class CustomCodeMismatch(VerificationError):
    """A resend of a verification whose code the tenant chose must repeat that code."""

    code = "custom_code_mismatch"


class IdempotencyKeyReused(VerificationError):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used for a different request; use a new key")


class IdempotencyInProgress(VerificationError):
    code = "idempotency_in_progress"

    def __init__(self, retry_after_seconds: int, held_for_seconds: int | None = None):
        bound = (
            f" (should its worker have stopped, the key stays held for at most {held_for_seconds} s more: "
            "no request can run longer, so none can place a second call)"
            if held_for_seconds is not None
            else ""
        )
        super().__init__(
            f"a request with this Idempotency-Key is still being processed; retry shortly{bound}"
        )
        self.retry_after_seconds = retry_after_seconds


class ProviderRejected(VerificationError):
    """The provider refused to call the number; the verification is recorded as failed."""

    code = "provider_rejected"

    def __init__(self, verification_id: str, reason: str):
        super().__init__(f"the voice provider refused the number: {reason}")
        self.verification_id = verification_id
        self.reason = reason


class ProviderUnavailable(VerificationError):
    """The provider could not place the call, or did not say whether it did (``call_may_have_rung``).

    When the call may have rung the verification stays pending and its code is accepted.
    """

    code = "provider_unavailable"

    def __init__(
        self,
        detail: str,
        retry_after_seconds: int,
        verification_id: str | None = None,
        *,
        call_may_have_rung: bool = False,
    ):
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds
        self.verification_id = verification_id
        self.call_may_have_rung = call_may_have_rung


class CallbackRejected(VerificationError):
    """A provider callback failed authentication; nothing was recorded."""

    code = "invalid_callback_credentials"


class StorageUnavailable(VerificationError):
    """The verification store did not answer in time; says what is known of the request's effects.

    ``call_placed`` is True when a call was placed before storage failed, False when none was, and
    None where no call is involved. A write may still land once storage is back (a stalled server
    applies what it had queued); the verification id is given whenever one exists.
    """

    code = "storage_unavailable"
    retry_after_seconds = 2

    def __init__(
        self,
        detail: str = "the verification store did not answer; nothing was done",
        *,
        verification_id: str | None = None,
        call_placed: bool | None = None,
    ):
        super().__init__(detail)
        self.verification_id = verification_id
        self.call_placed = call_placed
