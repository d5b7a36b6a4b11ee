"""The sandbox's in-memory provider account: tokens, campaigns, TTS templates and the calls placed."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from otpservice.sandbox.config import (
    EXAMPLE_CAMPAIGN_ID,
    EXAMPLE_OTP_TEMPLATE,
    EXAMPLE_TOKEN,
    SandboxConfig,
)

# The reference's call ids (1_1_1_5_...) and its CDR say user 5; its token example's "f461" is ignored.
EXAMPLE_USER_ID = "5"
EXAMPLE_TTS_TEMPLATE = "thong_bao_no_cuoc_1"
EXAMPLE_CALL_ID = "1_1_1_5_cb76e372-b798-4a88-9c8a-410740f0300d_0987654321"
# The provider's times carry no zone; they are most likely Vietnam time.
VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")

CallType = Literal["OTP", "TTS"]


def vietnam_now() -> datetime:
    """The current time in Vietnam (reports show it to the second; durations use the fraction)."""
    return datetime.now(VIETNAM_TIME)


def format_time(moment: datetime | None) -> str | None:
    """A report time as the provider writes it (``YYYY-MM-DD HH:MM:SS``)."""
    return None if moment is None else moment.astimezone(VIETNAM_TIME).strftime(TIME_FORMAT)


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=VIETNAM_TIME)


@dataclass(frozen=True, slots=True)
class Template:
    """A call script; ``{{key}}`` placeholders are filled from the call's params."""

    campaign_id: str
    name: str
    content: str

    @property
    def keys(self) -> list[str]:
        """Placeholder keys in order of first appearance."""
        return list(dict.fromkeys(PLACEHOLDER.findall(self.content)))

    def render(self, values: dict[str, Any]) -> str:
        """The text the call speaks; placeholders without a value stay as written."""
        return PLACEHOLDER.sub(lambda match: str(values.get(match.group(1), match.group(0))), self.content)


SEED_TEMPLATES = (
    Template(
        EXAMPLE_CAMPAIGN_ID,
        EXAMPLE_OTP_TEMPLATE,
        "Mã xác thực của bạn là {{code_otp}}. Xin nhắc lại, mã xác thực của bạn là {{code_otp}}.",
    ),
    Template(
        EXAMPLE_CAMPAIGN_ID,
        EXAMPLE_TTS_TEMPLATE,
        "Chào bạn {{customer_name}} vui lòng thanh toán khoản nợ {{due_amount}} trước ngày {{due_date}}",
    ),
)


@dataclass(slots=True)
class CallbackAttempt:
    """One delivery attempt of a call's callback."""

    url: str
    status_code: int | None
    error: str | None
    at: str

    def as_json(self) -> dict[str, Any]:
        """The attempt as the admin endpoints show it."""
        return {"url": self.url, "status_code": self.status_code, "error": self.error, "at": self.at}


@dataclass(slots=True)
class Call:
    """A call the sandbox placed, from ringing to its final status."""

    call_id: str
    campaign_id: str
    user_id: str
    phone_number: str
    call_type: CallType
    template_name: str
    spoken_text: str
    params: dict[str, Any]
    callback_url: str | None
    callback_apikey: str | None
    code_otp: str | None = None  # OTP calls only
    created_at: datetime = field(default_factory=vietnam_now)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    status: str = ""  # empty until the call has ended
    callbacks: list[CallbackAttempt] = field(default_factory=list)

    def reported_code_otp(self) -> str | None:
        """The CDR's code_otp: the call's code, but null once the call has failed (the reference's rule)."""
        return self.code_otp if self.status in ("", "ANSWERED") else None

    def cdr(self) -> dict[str, Any]:
        """The call detail record with every field of the reference's report."""
        duration = 0
        ended_at = self.ended_at
        if self.started_at is not None and self.ended_at is not None:
            duration = round((self.ended_at - self.started_at).total_seconds())
            # printed in whole seconds, the end is the printed start plus the duration, so that
            # duration = ended_at - started_at as the reference's example has it
            ended_at = self.started_at.replace(microsecond=0) + timedelta(seconds=duration)
        return {
            "id": self.call_id,
            "campaign_id": self.campaign_id,
            "code_otp": self.reported_code_otp(),
            "created_at": format_time(self.created_at),
            "started_at": format_time(self.started_at),
            "ended_at": format_time(ended_at),
            "duration": duration,
            "keypress": "127",
            "phone_number": self.phone_number,
            "user_id": self.user_id,
            "param": json.dumps(self.params, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
            "type": self.call_type,
            "status": self.status,
        }

    def summary(self) -> dict[str, Any]:
        """What ``GET /_sandbox/calls`` shows: the call and what it "said"."""
        return {
            "call_id": self.call_id,
            "phone": self.phone_number,
            "campaign_id": self.campaign_id,
            "template": self.template_name,
            "type": self.call_type,
            "spoken_text": self.spoken_text,
            "status": self.status,
            "created_at": format_time(self.created_at),
            "ended_at": format_time(self.ended_at),
            "callbacks": [attempt.as_json() for attempt in self.callbacks],
        }


def _example_call() -> Call:
    """The call of the reference's CDR example, so its report curl answers as documented."""
    params = {
        "customer_name": "Nguyễn Văn A",
        "due_amount": "10.410.000",
        "due_days": "#15",
        "template_name": EXAMPLE_TTS_TEMPLATE,
    }
    return Call(
        call_id=EXAMPLE_CALL_ID,
        campaign_id=EXAMPLE_CAMPAIGN_ID,
        user_id=EXAMPLE_USER_ID,
        phone_number="0987654321",
        call_type="TTS",
        template_name=EXAMPLE_TTS_TEMPLATE,
        spoken_text=SEED_TEMPLATES[1].render(params),
        params=params,
        callback_url=None,
        callback_apikey=None,
        code_otp="M43TUI",  # the reference's TTS example carries an OTP code; kept so it answers verbatim
        created_at=_parse_time("2021-01-11 11:28:45"),
        started_at=_parse_time("2021-01-11 11:28:54"),
        ended_at=_parse_time("2021-01-11 11:29:09"),
        status="ANSWERED",
    )


class TemplateExistsError(Exception):
    """A template with that name already exists in the campaign."""


class SandboxState:
    """One provider account as the reference's examples describe it, plus everything placed since."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.user_id = EXAMPLE_USER_ID
        self.campaign_ids = frozenset({EXAMPLE_CAMPAIGN_ID})
        self._token_expiry: dict[str, float] = {}  # token -> time.monotonic() deadline
        self.templates: dict[tuple[str, str], Template] = {}
        self.calls: dict[str, Call] = {}  # the calls placed here, in order
        # The reference's CDR example, reportable but not a call placed here (so not listed as one).
        self._example = _example_call()
        self.reseed()

    def reseed(self) -> None:
        """Back to the seed: no calls, only the seeded templates; the example token valid again."""
        self.templates = {(item.campaign_id, item.name): item for item in SEED_TEMPLATES}
        self.calls = {}
        self._token_expiry[EXAMPLE_TOKEN] = time.monotonic() + self.config.token_lifetime_seconds

    def issue_token(self, secret_key: str) -> str | None:
        """A fresh access token for a configured secret key, or None for an unknown key."""
        if not any(secrets.compare_digest(secret_key, known) for known in self.config.secret_keys):
            return None
        token = secrets.token_hex(4) + secrets.token_urlsafe(18)
        self._token_expiry[token] = time.monotonic() + self.config.token_lifetime_seconds
        return token

    def token_is_valid(self, token: str) -> bool:
        """Whether ``token`` was issued here and has not expired."""
        deadline = self._token_expiry.get(token)
        return deadline is not None and time.monotonic() < deadline

    def expire_tokens(self) -> int:
        """Expire every token now; return how many were still valid."""
        now = time.monotonic()
        valid = sum(1 for deadline in self._token_expiry.values() if deadline > now)
        self._token_expiry = dict.fromkeys(self._token_expiry, now)
        return valid

    def call(self, call_id: str) -> Call | None:
        """A call placed here, or the reference's example call, by id."""
        return self.calls.get(call_id) or (self._example if call_id == self._example.call_id else None)

    def template(self, campaign_id: str, name: str) -> Template | None:
        """The campaign's template called ``name``, if any."""
        return self.templates.get((campaign_id, name))

    def import_template(self, campaign_id: str, name: str, content: str) -> Template:
        """Create a template; names are unique per campaign and never overwritten."""
        if (campaign_id, name) in self.templates:
            raise TemplateExistsError(name)
        template = Template(campaign_id, name, content)
        self.templates[(campaign_id, name)] = template
        return template
