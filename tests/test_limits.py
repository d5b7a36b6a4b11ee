"""Limit lists (``3/10m,10/24h``) and the client-address subject budgets are kept under."""

from __future__ import annotations

import pytest

from otpservice.domain.client_ip import client_subject
from otpservice.domain.errors import InvalidClientIp
from otpservice.domain.limits import Limit, describe, flatten, longest_window_ms, parse_limits

SECOND, MINUTE, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3/10m", (Limit(3, 10 * MINUTE),)),
        ("2/10s", (Limit(2, 10 * SECOND),)),
        ("10/24h", (Limit(10, 24 * HOUR),)),
        ("5/7d", (Limit(5, 7 * DAY),)),
        ("3/10m,10/24h", (Limit(3, 10 * MINUTE), Limit(10, 24 * HOUR))),
        ("1/1s,2/1m,3/1h,4/1d", (Limit(1, SECOND), Limit(2, MINUTE), Limit(3, HOUR), Limit(4, DAY))),
        (" 3 / 10m , 10 / 24 h ", (Limit(3, 10 * MINUTE), Limit(10, 24 * HOUR))),
        ("\t3/10m\n", (Limit(3, 10 * MINUTE),)),
        ("2/1.5h", (Limit(2, 90 * MINUTE),)),
        ("1/0.5m", (Limit(1, 30 * SECOND),)),
        ("1/2.5s", (Limit(1, 2500),)),
        ("1/1s", (Limit(1, SECOND),)),
        ("1/31d", (Limit(1, 31 * DAY),)),
        ("1/744h", (Limit(1, 31 * DAY),)),
        ("1000000/1h", (Limit(1_000_000, HOUR),)),
        ("off", ()),
        ("OFF", ()),
        ("  Off ", ()),
    ],
)
def test_valid_limit_lists_parse(text: str, expected: tuple[Limit, ...]) -> None:
    """Every documented form parses to its counts and millisecond windows, spaces and case aside."""
    assert parse_limits(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3/10", "is not COUNT/WINDOW"),
        ("3", "is not COUNT/WINDOW"),
        ("3/m", "is not COUNT/WINDOW"),
        ("/10m", "is not COUNT/WINDOW"),
        ("3/10w", "is not COUNT/WINDOW"),
        ("3/10M", "is not COUNT/WINDOW"),
        ("1.5/10m", "is not COUNT/WINDOW"),
        ("-1/10m", "is not COUNT/WINDOW"),
        ("3/-10m", "is not COUNT/WINDOW"),
        ("3/1e3s", "is not COUNT/WINDOW"),
        ("3/.5h", "is not COUNT/WINDOW"),
        ("three/10m", "is not COUNT/WINDOW"),
        ("garbage", "is not COUNT/WINDOW"),
        ("3/10m;10/24h", "is not COUNT/WINDOW"),
        ("3/10m 10/24h", "is not COUNT/WINDOW"),
        ("", "is not COUNT/WINDOW"),
        ("3/10m,", "is not COUNT/WINDOW"),
        (",3/10m", "is not COUNT/WINDOW"),
        ("3/10m,,10/24h", "is not COUNT/WINDOW"),
        ("off,3/10m", "is not COUNT/WINDOW"),
        ("0/10m", "needs a count of at least 1"),
        ("3/0s", "a window from 1s to 31d"),
        ("3/0.5s", "a window from 1s to 31d"),
        ("3/32d", "a window from 1s to 31d"),
        ("3/745h", "a window from 1s to 31d"),
        ("3/31.5d", "a window from 1s to 31d"),
        ("3/10m,0/24h", "needs a count of at least 1"),
    ],
)
def test_invalid_limit_lists_are_refused_with_the_reason(text: str, expected: str) -> None:
    """A malformed or out-of-range part raises ValueError quoting that part and the rule it breaks."""
    with pytest.raises(ValueError, match=r"COUNT/WINDOW|count of at least 1") as refused:
        parse_limits(text)
    message = str(refused.value)
    assert expected in message
    assert "\n" not in message


def test_invalid_part_is_quoted_on_its_own() -> None:
    """The error names the offending part of a list, not the whole list."""
    with pytest.raises(ValueError, match=r"^'10/24' is not COUNT/WINDOW"):
        parse_limits("3/10m, 10/24")


@pytest.mark.parametrize(
    ("limit", "text"),
    [
        (Limit(3, 10 * MINUTE), "3/10m"),
        (Limit(10, 24 * HOUR), "10/1d"),
        (Limit(10, HOUR), "10/1h"),
        (Limit(2, 10 * SECOND), "2/10s"),
        (Limit(5, 90 * SECOND), "5/90s"),
        (Limit(2, 90 * MINUTE), "2/90m"),
        (Limit(1, 36 * HOUR), "1/36h"),
        (Limit(7, 7 * DAY), "7/7d"),
        (Limit(1, 31 * DAY), "1/31d"),
        (Limit(1, 1500), "1/1.5s"),
        (Limit(1, SECOND), "1/1s"),
    ],
)
def test_limit_prints_in_its_largest_whole_unit_and_parses_back(limit: Limit, text: str) -> None:
    """str(Limit) uses the largest unit that divides the window, and parse_limits reads it back."""
    assert str(limit) == text
    assert parse_limits(str(limit)) == (limit,)


@pytest.mark.parametrize("text", ["3/10m,10/24h", "10/1h", "20/10m", "2/1.5h,1/0.5m,4/45s", "off"])
def test_describe_round_trips_through_parse_limits(text: str) -> None:
    """describe() prints a list that parse_limits reads back to the same limits (() as off)."""
    limits = parse_limits(text)
    assert parse_limits(describe(limits)) == limits


def test_describe_of_no_limits_is_off() -> None:
    """An empty list of limits is described as off."""
    assert describe(()) == "off"
    assert describe(parse_limits("3/10m,10/24h")) == "3/10m,10/1d"


def test_flatten_interleaves_counts_and_windows() -> None:
    """flatten() lists count and window_ms of each limit in order, as the storage scripts take them."""
    assert flatten(parse_limits("3/10m,10/24h")) == [3, 600_000, 10, 86_400_000]
    assert flatten(()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3/10m,10/24h", 86_400_000),
        ("10/24h,3/10m", 86_400_000),
        ("2/10s", 10_000),
        ("off", 1000),
    ],
)
def test_longest_window_is_the_largest_window_or_one_second(text: str, expected: int) -> None:
    """longest_window_ms() is the widest window of the list, and 1s for no limits."""
    assert longest_window_ms(parse_limits(text)) == expected


@pytest.mark.parametrize(
    ("raw", "subject"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("0.0.0.0", "0.0.0.0"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:cb00:7107", "203.0.113.7"),
    ],
)
def test_client_subject_reduces_an_address_to_what_one_user_holds(raw: str, subject: str) -> None:
    """IPv4 stays as is, IPv6 becomes its /64 network, and IPv4-mapped IPv6 becomes the IPv4."""
    assert client_subject(raw) == subject


def test_addresses_in_one_ipv6_64_share_a_subject() -> None:
    """Two addresses in the same /64 share one budget; an address in the neighbouring /64 does not."""
    first = client_subject("2001:db8:aaaa:bbbb::1")
    assert first == client_subject("2001:db8:aaaa:bbbb:ffff:ffff:ffff:fffe")
    assert first != client_subject("2001:db8:aaaa:bbbc::1")
    assert first != client_subject("2001:db8:aaab:bbbb::1")


def test_ipv4_mapped_address_shares_the_ipv4_subject() -> None:
    """A dual-stack listener's ::ffff:a.b.c.d form counts against the same budget as a.b.c.d."""
    assert client_subject("::ffff:198.51.100.20") == client_subject("198.51.100.20")
    assert client_subject("198.51.100.20") != client_subject("198.51.100.21")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "localhost",
        "example.com",
        "203.0.113",
        "203.0.113.256",
        "203.0.113.7:8080",
        "[2001:db8::1]",
        "2001:db8::/64",
        "203.0.113.0/24",
        "2001:db8:::1",
        "203.0.113.7, 10.0.0.1",
    ],
)
def test_client_subject_refuses_what_is_not_an_address(raw: str) -> None:
    """Anything but one bare IPv4 or IPv6 address raises InvalidClientIp with its stable code."""
    with pytest.raises(InvalidClientIp) as refused:
        client_subject(raw)
    assert refused.value.code == "invalid_client_ip"
