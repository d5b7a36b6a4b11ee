"""What the Autocall client returns and raises: typed results and failures the service can act on.

Provider-facing spellings (``NOANWSER``) stay here and in the client; the rest of the code base sees
only :class:`CallStatus`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class CallStatus(enum.StrEnum):
    """Our own vocabulary for a call's disposition, whatever the provider's spelling."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CONGESTION = "congestion"
    INVALID_NUMBER = "invalid_number"
    ERROR = "error"
    CANCELED = "canceled"
    FAILED = "failed"

    @classmethod
    def from_provider(cls, word: str) -> CallStatus | None:
        """Map any provider status word (any case, both vocabularies) to ours; None when unknown."""
        return _PROVIDER_WORDS.get(word.strip().upper())


_PROVIDER_WORDS: dict[str, CallStatus] = {
    "ANSWERED": CallStatus.ANSWERED,
    "NOANWSER": CallStatus.NO_ANSWER,  # the provider's spelling
    "NOANSWER": CallStatus.NO_ANSWER,
    "NO_ANSWER": CallStatus.NO_ANSWER,
    "BUSY": CallStatus.BUSY,
    "CONGESTION": CallStatus.CONGESTION,
    "INVALIDNUMBER": CallStatus.INVALID_NUMBER,
    "ERROR": CallStatus.ERROR,
    "CANCEL": CallStatus.CANCELED,
    "FAIL": CallStatus.FAILED,
    # The older API's callback vocabulary.
    "SUCCESS": CallStatus.ANSWERED,
}


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A provider access token and when we stop trusting it (monotonic seconds)."""

    value: str = field(repr=False)
    lifetime_seconds: float
    obtained_at: float


@dataclass(frozen=True, slots=True)
class CalleeRejection:
    """One callee the provider refused, with its reason (``Wrong Format``, ``Blacklist``, ...)."""

    phone: str
    reason: str


@dataclass(slots=True)
class CallFlight:
    """Whether a call-placing request is out without its answer yet. A caller that bounds the whole
    exchange reads it when its bound ends: only a request out then may have rung someone (a token
    fetched after a 401, say, places nothing)."""

    unanswered: bool = False


@dataclass(frozen=True, slots=True)
class CallPlacement:
    """Outcome of one call-placing request: accepted call ids and per-callee rejections.

    A partial failure is a normal result, not an exception.
    """

    campaign_id: str
    accepted: tuple[str, ...]
    rejected: tuple[CalleeRejection, ...]

    def call_id_for(self, national_phone: str) -> str | None:
        """The accepted call id whose trailing callee matches the number, if any."""
        for call_id in self.accepted:
            if call_id.endswith("_" + national_phone):
                return call_id
        return None

    def rejection_for(self, national_phone: str) -> CalleeRejection | None:
        """The rejection for that callee, if the provider refused it."""
        for rejection in self.rejected:
            if rejection.phone == national_phone:
                return rejection
        return None


@dataclass(frozen=True, slots=True)
class TemplateImport:
    """The provider's answer to a template import; its real shape is unknown, so kept raw too."""

    name: str
    raw: dict[str, object]


@dataclass(frozen=True, slots=True)
class CallReport:
    """One call detail record (CDR) as the provider reports it."""

    call_id: str
    campaign_id: str
    user_id: str | None
    phone_number: str
    call_type: str | None
    provider_status: str | None
    status: CallStatus | None
    keypress: str | None
    params: dict[str, object] = field(repr=False)  # echoes the request, OTP code included
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: int | None
    code_otp: str | None = field(default=None, repr=False)


class AutocallError(Exception):
    """Base of every failure the Autocall client raises."""


class ProviderUnavailable(AutocallError):
    """The provider could not be reached, timed out or answered 5xx: try later.

    ``request_may_have_reached_provider`` tells whether a call-placing request might have rung
    someone anyway (a read timeout after sending), so callers do not retry it blindly.
    """

    def __init__(
        self, message: str, *, request_may_have_reached_provider: bool, status_code: int | None = None
    ):
        super().__init__(message)
        self.request_may_have_reached_provider = request_may_have_reached_provider
        self.status_code = status_code


class ProviderRejectedRequest(AutocallError):
    """The provider answered 4xx (other than an unrecoverable 401) with its message."""

    def __init__(self, message: str, *, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class ProviderAuthFailed(AutocallError):
    """The secret key was refused, or a fresh token was refused again."""


class CallReportNotFound(ProviderRejectedRequest):
    """The provider has no report for that call id (404): unknown id, or a call not reported yet."""


class ProviderMalformedResponse(AutocallError):
    """The provider's answer was not the JSON we expected (proxy HTML page, truncated body, ...).

    ``request_may_have_reached_provider`` is True when the request itself was answered (a placed
    call may exist), False when only the token request before it failed (nothing was placed).
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, request_may_have_reached_provider: bool = True
    ):
        super().__init__(message)
        self.status_code = status_code
        self.request_may_have_reached_provider = request_may_have_reached_provider
