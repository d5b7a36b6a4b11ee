"""Logs of a whole flow carry no code, secret or unmasked phone number."""

from __future__ import annotations

import io
import json
import logging
import time

from otpservice.domain.callback_auth import CallbackSigner
from otpservice.logs import configure_logging, redact
from otpservice.sandbox.config import EXAMPLE_SECRET_KEY, EXAMPLE_TOKEN
from tests.support.flows import create, heard_code, wrong_code
from tests.support.sandbox import SandboxHandle
from tests.support.service import API_KEY, PEPPER, ServiceHandle


def test_full_flow_logs_hold_no_secrets(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """Create, fail, resend, verify and callbacks log masked numbers only, and never a code or secret."""
    with service.client() as client:
        vid = create(client, "0987654321")["id"]
        first = heard_code(sandbox, "0987654321")
        client.post("/verify", json={"id": vid, "code": wrong_code(first)})
        service.clock.advance(30)
        client.post(f"/otp/{vid}/resend")
        second = heard_code(sandbox, "0987654321")
        client.post("/verify", json={"id": vid, "code": second})
        client.post("/otp", json={"phone": "0900000008"})
        deadline = time.monotonic() + 5  # let the callbacks land, so their handling is in the logs too
        while client.get(f"/otp/{vid}").json()["delivery"]["status"] != "answered":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    text = service.logs.getvalue()
    assert "call.callback" in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(line["event"] == "verification.created" for line in lines)
    assert "+8498*****21" in text
    signer = CallbackSigner(PEPPER)
    forbidden = {
        "first code": first,
        "second code": second,
        "number": "987654321",
        "blacklisted number": "900000008",
        "pepper": PEPPER.decode(),
        "api key": API_KEY,
        "provider secret": EXAMPLE_SECRET_KEY,
        "provider token": EXAMPLE_TOKEN,
        "callback credential": signer.credential(vid, 1),
    }
    for what, value in forbidden.items():
        assert value not in text, f"the logs contain the {what}"


def test_redaction_masks_what_slips_through() -> None:
    """The last-line processor drops secret fields and masks numbers inside any string."""
    event = redact(None, "info", {"event": "x", "code": "123456", "url": "/report/1_1_1_5_u_0987654321"})
    assert event["code"] == "[redacted]"
    assert "0987654321" not in event["url"]


def test_redaction_leaves_ids_readable() -> None:
    """Digit runs inside verification ids are not mistaken for phone numbers."""
    vid = "vf_94cb877ddac98a03798e9452782304dd"
    assert redact(None, "info", {"event": "x", "verification_id": vid})["verification_id"] == vid


def test_redaction_masks_callback_credentials_numbers_in_messages_and_secrets_in_any_case() -> None:
    """A callback URL's credential, a number inside a library's message and a secret field named in
    capitals are all hidden; the fields the pipeline adds itself are left as they are."""
    credential = "9f" * 16
    event = redact(
        None,
        "info",
        {
            "event": f"POST http://x/callbacks/autocall/vf_abc/1/{credential} from +84987654321",
            "Authorization": "Bearer k",
            "timestamp": "2026-11-28T06:00:00Z",
            "level": "info",
        },
    )
    assert credential not in event["event"]
    assert "[redacted]" in event["event"]
    assert "+84987654321" not in event["event"]
    assert event["Authorization"] == "[redacted]"
    assert event["timestamp"] == "2026-11-28T06:00:00Z"


def test_a_library_extra_named_like_a_pipeline_field_cannot_skip_redaction() -> None:
    """A stdlib log whose `extra` carries a number under a name the pipeline adds (timestamp,
    level, logger) is written with the pipeline's own value there, never the number."""
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        logging.getLogger("some.library").warning(
            "x", extra={"timestamp": "+84987654321", "level": "+84987654322", "logger": "+84987654323"}
        )
    finally:
        configure_logging("INFO")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert "849876543" not in stream.getvalue()
    assert line["logger"] == "some.library"
    assert line["level"] == "warning"


def test_redaction_masks_numbers_written_in_groups_and_inside_lists_and_dicts() -> None:
    """A number in groups (spaces, dashes, dots), or inside a list, tuple or dict (a secret field there
    too), is masked; a date and time is left as it is."""
    event = redact(
        None,
        "info",
        {
            "message": "call +84 98 765 4321 or 0987-654-321 or 0987.654.321",
            "rejected": [("0987****21", "Blacklist 0987654321")],
            "extra": {"to": "0987654321", "token": "abc", "nested": ["+84987654321"]},
            "at": "2026-11-29 07:00:00",
        },
    )
    text = json.dumps(event)
    for whole in ("98 765 4321", "0987-654-321", "0987.654.321", "0987654321", "84987654321", "abc"):
        assert whole not in text
    assert event["at"] == "2026-11-29 07:00:00"
    assert event["extra"]["token"] == "[redacted]"
