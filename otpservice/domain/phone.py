"""Phone numbers: parse what users type, keep E.164, hand the provider its national form, mask for logs."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType

from otpservice.domain.errors import InvalidPhone

# Types that a voice call can reach; premium-rate, shared-cost, toll-free, pager, UAN, voicemail
# and unknown numbers are refused (toll fraud and undeliverable calls).
_CALLABLE_TYPES = frozenset(
    {
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.PERSONAL_NUMBER,
    }
)
_ACCEPTED_CHARACTERS = re.compile(r"^\+?[0-9 ()\-.]{6,24}$")


# What may pad a number: the whitespace of the published pattern's "\s" (JSON Schema's, ECMA's).
# Python's str.strip() takes more (the separators \x1c-\x1f, \x85), which the contract refuses.
_PADDING = (
    " \t\n\v\f\r\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A validated, callable phone number."""

    e164: str
    national: str  # digits only, as the provider expects (0987654321)
    region: str


def parse_phone(raw: str, allowed_regions: tuple[str, ...]) -> PhoneNumber:
    """Validate and normalise a number typed as 0987654321, +84987654321 or 84987654321."""
    text = raw.strip(_PADDING)
    if not _ACCEPTED_CHARACTERS.match(text):
        raise InvalidPhone(
            "the phone number must be 6 to 24 characters: digits, spaces, dashes, dots, parentheses "
            "and a leading +"
        )
    default_region = allowed_regions[0] if allowed_regions else "VN"
    candidates = [text]
    digits = re.sub(r"\D", "", text)
    if not text.startswith("+") and not digits.startswith("0"):
        candidates.append("+" + digits)  # 84987654321: the country code typed without its +
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, default_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return _checked(number, allowed_regions)
    raise InvalidPhone("not a valid phone number")


def stored_phone(e164: str) -> PhoneNumber:
    """Rebuild a number this service validated earlier (no policy checks: it passed them)."""
    number = phonenumbers.parse(e164)
    return _as_phone(number, phonenumbers.region_code_for_number(number) or "")


def _checked(number: phonenumbers.PhoneNumber, allowed_regions: tuple[str, ...]) -> PhoneNumber:
    region = phonenumbers.region_code_for_number(number) or ""
    if region not in allowed_regions:
        raise InvalidPhone(f"numbers from {region or 'that region'} are not allowed here")
    if phonenumbers.number_type(number) not in _CALLABLE_TYPES:
        raise InvalidPhone("this kind of number cannot take a verification call")
    return _as_phone(number, region)


def _as_phone(number: phonenumbers.PhoneNumber, region: str) -> PhoneNumber:
    national = re.sub(r"\D", "", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL))
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber(e164=e164, national=national, region=region)


def number_range(e164: str) -> str:
    """The range a number belongs to for range budgets: the E.164 number without its last 3 digits.

    International revenue share fraud walks consecutive numbers a premium carrier holds.
    """
    return e164[:-3]


def mask_phone(phone: str) -> str:
    """Keep the country and operator prefix and the last two digits: +84987654321 -> +8498*****21."""
    keep_head = 5 if phone.startswith("+") else 4
    if len(phone) <= keep_head + 2:
        return "*" * len(phone)
    return phone[:keep_head] + "*" * (len(phone) - keep_head - 2) + phone[-2:]
