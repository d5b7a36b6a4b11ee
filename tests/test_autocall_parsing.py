"""Lenient parsing of the provider's JSON: the reference's examples are not to be trusted."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from otpservice.adapters.autocall import CalleeRejection, CallStatus, ProviderMalformedResponse, mask_call_id
from otpservice.adapters.autocall.callback import parse_callback
from otpservice.adapters.autocall.parsing import (
    DEFAULT_TOKEN_LIFETIME_SECONDS,
    error_message,
    parse_placement,
    parse_provider_time,
    parse_report,
    parse_token,
    response_data,
)


@pytest.mark.parametrize(
    ("results", "accepted", "rejected"),
    [
        ({"success": ["a_1"]}, ("a_1",), ()),
        ({"success": "a_1"}, ("a_1",), ()),
        ({"fail": [{"123": "Wrong Format"}]}, (), (CalleeRejection("123", "Wrong Format"),)),
        ({"fail": {"123": "Blacklist"}, "success": None}, (), (CalleeRejection("123", "Blacklist"),)),
        ({"fail": [{"1": "A", "2": "B"}, "3"], "success": []}, (),
         (CalleeRejection("1", "A"), CalleeRejection("2", "B"), CalleeRejection("3", ""))),
    ],
)  # fmt: skip
def test_placement_tolerates_missing_and_odd_lists(
    results: dict[str, object], accepted: tuple[str, ...], rejected: tuple[CalleeRejection, ...]
) -> None:
    """Missing success or fail lists and odd fail entries still yield the callees the answer names."""
    placement = parse_placement({"results": results}, default_campaign_id="9")
    assert (placement.campaign_id, placement.accepted, placement.rejected) == ("9", accepted, rejected)


def test_placement_without_results_is_malformed() -> None:
    """An answer that says nothing about any callee is malformed, not an empty success."""
    with pytest.raises(ProviderMalformedResponse):
        parse_placement({"campaign_id": "1", "results": {}}, default_campaign_id="1")


@pytest.mark.parametrize(
    ("expire_at", "lifetime"),
    [(15552000, 15552000.0), ("86400", 86400.0), (None, DEFAULT_TOKEN_LIFETIME_SECONDS), (0, 86400.0)],
)
def test_token_lifetime_is_a_duration(expire_at: object, lifetime: float) -> None:
    """expire_at is read as seconds of lifetime; missing or nonsense falls back to a day."""
    token = parse_token({"access_token": "t", "expire_at": expire_at}, obtained_at=5.0)
    assert (token.value, token.lifetime_seconds, token.obtained_at) == ("t", lifetime, 5.0)
    assert "'t'" not in repr(token)


def test_token_without_access_token_is_malformed() -> None:
    """A token answer lacking access_token is malformed."""
    with pytest.raises(ProviderMalformedResponse):
        parse_token({"expire_at": 10}, obtained_at=0.0)


def test_unfinished_call_report() -> None:
    """A report with empty status and null times is a call still in progress; bad param JSON is kept empty."""
    report = parse_report(
        {
            "id": "x_1",
            "status": "",
            "ended_at": None,
            "started_at": "",
            "param": "{not json",
            "duration": "n/a",
        },
        requested_call_id="x_1",
    )
    assert (report.status, report.provider_status, report.ended_at, report.started_at) == (
        None,
        None,
        None,
        None,
    )
    assert (report.params, report.duration_seconds) == ({}, None)


def test_report_falls_back_to_the_requested_id_and_maps_any_case() -> None:
    """A report without an id keeps the requested one; status words map in any case."""
    report = parse_report({"status": "busy", "param": {"a": 1}}, requested_call_id="c_1")
    assert (report.call_id, report.status, report.params) == ("c_1", CallStatus.BUSY, {"a": 1})


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2021-01-11 11:28:45", datetime(2021, 1, 11, 4, 28, 45, tzinfo=UTC)),
        ("2021-01-11T04:28:45Z", datetime(2021, 1, 11, 4, 28, 45, tzinfo=UTC)),
        ("0000-00-00 00:00:00", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_provider_times_are_vietnam_time(text: object, moment: datetime | None) -> None:
    """Zone-less provider times are UTC+7; explicit zones are kept; empty or unreadable is None."""
    assert parse_provider_time(text) == moment


def test_call_ids_are_logged_with_the_number_masked() -> None:
    """The callee number that ends a call id is masked; other ids pass unchanged."""
    assert mask_call_id("1_1_1_5_cb76e372_0987654321") == "1_1_1_5_cb76e372_0987****21"
    assert mask_call_id("opaque-id") == "opaque-id"


def test_a_callback_duration_in_non_ascii_digits_is_no_duration() -> None:
    """A duration in digits int() cannot read (superscripts, circled digits) is left out, never an error."""
    for duration in ("\u00b2", "\u2460", "1\u00b2"):
        report = parse_callback({"id": "c1", "status": "ANSWERED", "duration": duration})
        assert report.duration_seconds is None


def test_a_provider_answer_nested_too_deep_is_malformed_not_an_error() -> None:
    """An answer nested deeper than the JSON reader goes is a malformed answer, like truncated JSON."""
    deep = httpx.Response(200, content=b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(ProviderMalformedResponse):
        response_data(deep)
    assert error_message(deep) == "HTTP 200 without a message"


@pytest.mark.parametrize(
    ("duration", "seconds"), [("42", 42), (17.9, 17), ("1e300", None), (-3, None), (86400, None)]
)
def test_a_report_duration_is_whole_seconds_under_a_day(duration: object, seconds: int | None) -> None:
    """A report's duration is kept in whole seconds under a day; anything else is unknown."""
    report = parse_report({"id": "c_1", "status": "ANSWERED", "duration": duration}, requested_call_id="c_1")
    assert report.duration_seconds == seconds


def test_a_callback_duration_given_as_a_whole_float_is_read() -> None:
    """A callback's duration written as a float with nothing after the point (15.0) is 15 seconds."""
    assert parse_callback({"id": "c1", "status": "ANSWERED", "duration": 15.0}).duration_seconds == 15
