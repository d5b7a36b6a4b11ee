"""Magic callee numbers: each one gives a fixed call outcome, like a telephony provider's test numbers."""

from __future__ import annotations

import re

ANSWERED = "ANSWERED"
# Final statuses keep the provider's spelling, NOANWSER included.
MAGIC_OUTCOMES: dict[str, str] = {
    "0900000001": "NOANWSER",
    "0900000002": "BUSY",
    "0900000003": "CONGESTION",
    "0900000004": "INVALIDNUMBER",
    "0900000005": "ERROR",
    "0900000006": "CANCEL",
    "0900000007": "FAIL",
}
# Callees refused when the call is placed, with the reason put in ``results.fail``.
MAGIC_REJECTIONS: dict[str, str] = {"0900000008": "Blacklist"}

WRONG_FORMAT = "Wrong Format"
MISSING_TTS_KEY = "Missing TTS Key"

_NATIONAL_NUMBER = re.compile(r"0\d{9,10}")


def is_national_number(phone: str) -> bool:
    """Whether ``phone`` is in the Vietnamese national format the provider accepts (0 then 9-10 digits)."""
    return _NATIONAL_NUMBER.fullmatch(phone) is not None


def outcome_for(phone: str) -> str:
    """The final call status the sandbox gives a call to ``phone``."""
    return MAGIC_OUTCOMES.get(phone, ANSWERED)


def national_form(phone: str) -> str:
    """``+84...`` or ``84...`` written as ``0...``; other text unchanged (spaces, dots and dashes dropped)."""
    digits = re.sub(r"[\s.\-()]", "", phone)
    if digits.startswith("+84"):
        return "0" + digits[3:]
    if digits.startswith("84") and len(digits) in (11, 12):
        return "0" + digits[2:]
    return digits
