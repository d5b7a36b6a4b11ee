"""The sandbox's five provider endpoints, driven over real HTTP with the reference's own examples."""

# The reference's request bodies are kept byte for byte, trailing spaces included.
# ruff: noqa: W291

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from otpservice.sandbox.config import EXAMPLE_SECRET_KEY, EXAMPLE_TOKEN, SandboxConfig
from tests.support.sandbox import SandboxHandle, running_sandbox

AUTH = {"Authorization": EXAMPLE_TOKEN}
JSON = {"Content-Type": "application/json"}
CALL_ID = re.compile(r"1_1_1_5_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}_(\d+)")
TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")

# The reference's request bodies, byte for byte.
TOKEN_BODY = """{ 
"secret_key": "30511f666-f888-411b-a6e0-11111fb6gg7a"
 }"""
OTP_CURL_BODY = """{ 
    "caller": "0123456789", 
    "callees": [ "0987654321" ], 
    "params": { 
    "template_name": "template_otp_1", 
    "code_otp": "M43TUI" 
  }, 
  "callback_url": "https://demo.webhook.com", 
  "callback_apikey": "api_key_123" 
}"""
OTP_SAMPLE_BODY = """{ 
  "caller": "0123456789", 
  "callees": [ 
    "0987654321",
    "1234567890"
  ],
  "params": {
    "template_name": "template_otp_1", 
    "code_otp": "M43TUI" 
  }, 
  "callback_url": "https://demo.webhook.com", 
  "callback_apikey": "api_key_123" 
}
"""
IMPORT_BODY = (
    "{\n"
    '    "name": "thong_bao_no_cuoc_01",\n'
    '    "content": "Chào bạn {{customer_name}} vui lòng thanh toán khoản nợ {{due_amount}} '
    'trước ngày {{due_date}}"\n'
    "}"
)
RUN_TTS_CURL_BODY = """{
    "caller": "1234567890",
    "callees": [
        "0987654321",
        "1234567890"
    ],
    "params": {
        "template_name": "thong_bao_no_cuoc_1",
        "customer_name": "Nguyễn Văn A",
        "due_amount": "10.410.000",
        "due_days": "#15"
    },
    "callback_url": "https://demo.webhook.com",
    "callback_apikey": "api_key_123"
}"""
RUN_TTS_SAMPLE_BODY = RUN_TTS_CURL_BODY.replace('"due_days": "#15"', '"due_date": "30/1/2021"')
EXAMPLE_CDR = {
    "campaign_id": "1",
    "code_otp": "M43TUI",
    "created_at": "2021-01-11 11:28:45",
    "duration": 15,
    "ended_at": "2021-01-11 11:29:09",
    "id": "1_1_1_5_cb76e372-b798-4a88-9c8a-410740f0300d_0987654321",
    "keypress": "127",
    "param": '{"customer_name":"Nguyễn Văn A","due_amount":"10.410.000","due_days":"#15",'
    '"template_name":"thong_bao_no_cuoc_1"}',
    "phone_number": "0987654321",
    "started_at": "2021-01-11 11:28:54",
    "status": "ANSWERED",
    "type": "TTS",
    "user_id": "5",
}


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox() as handle:
        yield handle


@pytest.fixture(scope="module")
def shared_client(shared_sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_sandbox.url, timeout=5) as http:
        yield http


@pytest.fixture
def sandbox(shared_sandbox: SandboxHandle, shared_client: httpx.Client) -> SandboxHandle:
    """The module's sandbox, reset to its seed (tests here never change its timings)."""
    shared_client.post("/_sandbox/reset").raise_for_status()
    return shared_sandbox


@pytest.fixture
def client(sandbox: SandboxHandle, shared_client: httpx.Client) -> httpx.Client:
    return shared_client


def assert_envelope(response: httpx.Response, status: int, phrase: str) -> str:
    """Assert the provider's error envelope with ``status``; return its error detail."""
    assert response.status_code == status
    body = response.json()
    assert body["messsage"] == phrase
    assert body["code"] == status
    assert body["status"] is False
    detail: str = body["data"]["error"]
    return detail


def otp_body(*callees: Any, code: str = "482913", **extra: Any) -> dict[str, Any]:
    return {
        "callees": list(callees),
        "params": {"template_name": "template_otp_1", "code_otp": code},
        **extra,
    }


def test_token_example_verbatim(client: httpx.Client) -> None:
    """The reference's token request, sent byte for byte, gets a token in the reference's shape."""
    response = client.post("/api/v1/users/generate_access_token", content=TOKEN_BODY, headers=JSON)
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {"id", "user_id", "access_token", "refresh_token", "expire_at", "token_type", "scope"}
    assert data["expire_at"] == 15552000
    assert data["refresh_token"] == ""
    assert (data["token_type"], data["scope"], data["user_id"]) == ("Bearer", "member", "5")
    assert isinstance(data["access_token"], str)
    assert len(data["access_token"]) >= 16


def test_issued_token_authorises_calls(client: httpx.Client) -> None:
    """A freshly issued token is accepted by the campaign endpoints."""
    token = client.post(
        "/api/v1/users/generate_access_token", json={"secret_key": EXAMPLE_SECRET_KEY}
    ).json()["data"]["access_token"]
    response = client.post(
        "/api/v2/campaigns/1/otp", json=otp_body("0987654321"), headers={"Authorization": token}
    )
    assert response.status_code == 200


def test_token_lifetime_is_configurable() -> None:
    """``expire_at`` reports the configured token lifetime in whole seconds."""
    with running_sandbox(SandboxConfig(token_lifetime_seconds=86400)) as handle:
        response = httpx.post(
            f"{handle.url}/api/v1/users/generate_access_token", json={"secret_key": EXAMPLE_SECRET_KEY}
        )
    assert response.json()["data"]["expire_at"] == 86400


def test_wrong_secret_key_is_401(client: httpx.Client) -> None:
    """An unknown secret key is refused with 401 in the error envelope."""
    response = client.post("/api/v1/users/generate_access_token", json={"secret_key": "nope"})
    assert_envelope(response, 401, "Unauthorized")


@pytest.mark.parametrize("body", ["{}", "[]", "not json", '{"secret_key": 5}'])
def test_token_request_without_secret_key_is_400(client: httpx.Client, body: str) -> None:
    """A token request without a string secret_key is a 400 in the error envelope."""
    response = client.post("/api/v1/users/generate_access_token", content=body, headers=JSON)
    assert_envelope(response, 400, "Bad Request")


def test_otp_curl_example_verbatim(client: httpx.Client) -> None:
    """The reference's Run-OTP curl body places one call whose id follows the reference's pattern."""
    response = client.post("/api/v2/campaigns/1/otp", content=OTP_CURL_BODY, headers=AUTH | JSON)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["campaign_id"] == "1"
    assert data["results"]["fail"] == []
    [call_id] = data["results"]["success"]
    match = CALL_ID.fullmatch(call_id)
    assert match is not None
    assert match.group(1) == "0987654321"


def test_otp_sample_body_is_a_partial_failure(client: httpx.Client) -> None:
    """The reference's OTP sample body answers 200 with 1234567890 failing as Wrong Format."""
    response = client.post("/api/v2/campaigns/1/otp", content=OTP_SAMPLE_BODY, headers=AUTH | JSON)
    assert response.status_code == 200
    results = response.json()["data"]["results"]
    assert results["fail"] == [{"1234567890": "Wrong Format"}]
    assert len(results["success"]) == 1
    assert results["success"][0].endswith("_0987654321")


def test_import_example_verbatim_then_duplicate_name(client: httpx.Client) -> None:
    """The reference's import body creates the template once; importing the same name again is a 400."""
    first = client.post("/api/v2/campaigns/1/voice/import", content=IMPORT_BODY.encode(), headers=AUTH | JSON)
    assert first.status_code == 200
    data = first.json()["data"]
    assert (data["campaign_id"], data["name"]) == ("1", "thong_bao_no_cuoc_01")
    assert data["keys"] == ["customer_name", "due_amount", "due_date"]
    again = client.post("/api/v2/campaigns/1/voice/import", content=IMPORT_BODY.encode(), headers=AUTH | JSON)
    assert assert_envelope(again, 400, "Bad Request") == "template name already exists"


@pytest.mark.parametrize("body", [{"name": "x"}, {"content": "Xin chào"}, {"name": "", "content": "a"}, []])
def test_import_without_name_or_content_is_400(client: httpx.Client, body: Any) -> None:
    """An import body without both a name and a content is a 400 in the error envelope."""
    response = client.post("/api/v2/campaigns/1/voice/import", json=body, headers=AUTH)
    assert_envelope(response, 400, "Bad Request")


def test_run_tts_curl_example_verbatim_hits_import_and_is_400(client: httpx.Client) -> None:
    """The reference's Run-TTS curl posts a call body to /voice/import, which lacks name and content: 400."""
    response = client.post(
        "/api/v2/campaigns/1/voice/import", content=RUN_TTS_CURL_BODY.encode(), headers=AUTH | JSON
    )
    assert assert_envelope(response, 400, "Bad Request") == "name is required"


def test_run_tts_curl_body_with_due_days_misses_a_tts_key(client: httpx.Client) -> None:
    """The Run-TTS curl body sent to /voice lacks due_date, so every callee fails with Missing TTS Key."""
    response = client.post(
        "/api/v2/campaigns/1/voice", content=RUN_TTS_CURL_BODY.encode(), headers=AUTH | JSON
    )
    assert response.status_code == 200
    results = response.json()["data"]["results"]
    assert results == {
        "fail": [{"0987654321": "Missing TTS Key"}, {"1234567890": "Missing TTS Key"}],
        "success": [],
    }


def test_run_tts_sample_body_places_a_tts_call(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """The Run-TTS sample body places a TTS call whose CDR has a null code and the params as a JSON string."""
    response = client.post(
        "/api/v2/campaigns/1/voice", content=RUN_TTS_SAMPLE_BODY.encode(), headers=AUTH | JSON
    )
    results = response.json()["data"]["results"]
    assert results["fail"] == [{"1234567890": "Wrong Format"}]
    [call_id] = results["success"]
    call = sandbox.wait_until_ended([call_id])[call_id]
    assert call["spoken_text"] == (
        "Chào bạn Nguyễn Văn A vui lòng thanh toán khoản nợ 10.410.000 trước ngày 30/1/2021"
    )
    cdr = client.get(f"/api/v2/report/{call_id}", headers=AUTH).json()["data"]
    assert (cdr["type"], cdr["status"], cdr["code_otp"]) == ("TTS", "ANSWERED", None)
    assert cdr["param"] == (
        '{"customer_name":"Nguyễn Văn A","due_amount":"10.410.000","due_date":"30/1/2021",'
        '"template_name":"thong_bao_no_cuoc_1"}'
    )


def test_report_example_verbatim(client: httpx.Client) -> None:
    """The reference's Get-CDR example answers exactly the reference's record (it is seeded)."""
    response = client.get(
        "/api/v2/report/1_1_1_5_cb76e372-b798-4a88-9c8a-410740f0300d_0987654321",
        headers={"Authorization": "1ebe8f88MzA1MTNkZjMtZjc3My00MTmY"},
    )
    assert response.status_code == 200
    assert response.json() == {"data": EXAMPLE_CDR}


def test_cdr_has_every_field_in_the_reference_formats(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """An ended OTP call's CDR has all reference fields, Vietnam-time stamps and the OTP code."""
    call_id = client.post(
        "/api/v2/campaigns/1/otp", json=otp_body("0987654321", code="M43TUI"), headers=AUTH
    ).json()["data"]["results"]["success"][0]
    sandbox.wait_until_ended([call_id])
    cdr = client.get(f"/api/v2/report/{call_id}", headers=AUTH).json()["data"]
    assert set(cdr) == set(EXAMPLE_CDR)
    assert cdr["id"] == call_id
    assert (cdr["campaign_id"], cdr["user_id"], cdr["phone_number"]) == ("1", "5", "0987654321")
    assert (cdr["type"], cdr["status"], cdr["code_otp"], cdr["keypress"]) == (
        "OTP",
        "ANSWERED",
        "M43TUI",
        "127",
    )
    assert json.loads(cdr["param"]) == {"template_name": "template_otp_1", "code_otp": "M43TUI"}
    assert isinstance(cdr["duration"], int)
    for key in ("created_at", "started_at", "ended_at"):
        assert TIME.fullmatch(cdr[key])
    created = datetime.strptime(cdr["created_at"], "%Y-%m-%d %H:%M:%S")
    vietnam_now = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=7)
    assert abs((vietnam_now - created).total_seconds()) < 60


def test_report_before_the_call_ends_then_after() -> None:
    """A ringing call reports status "" and no end; once ended, its duration is the talk time."""
    config = SandboxConfig(ring_seconds=0.3, talk_seconds=1.0)
    with running_sandbox(config) as handle, httpx.Client(base_url=handle.url, headers=AUTH) as client:
        call_id = client.post("/api/v2/campaigns/1/otp", json=otp_body("0987654321")).json()["data"][
            "results"
        ]["success"][0]
        early = client.get(f"/api/v2/report/{call_id}").json()["data"]
        assert (early["status"], early["ended_at"], early["started_at"]) == ("", None, None)
        handle.wait_until_ended([call_id])
        final = client.get(f"/api/v2/report/{call_id}").json()["data"]
    assert final["status"] == "ANSWERED"
    assert final["duration"] == 1


def test_report_path_is_url_decoded(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """A percent-encoded call id in the report path finds the call."""
    call_id = "1_1_1_5_cb76e372-b798-4a88-9c8a-410740f0300d_0987654321"
    encoded = quote(call_id, safe="").replace("_", "%5F")
    response = client.get(f"/api/v2/report/{encoded}", headers=AUTH)
    assert response.json()["data"]["id"] == call_id


def test_unknown_call_id_is_404(client: httpx.Client) -> None:
    """Reporting an unknown call id is a 404 in the error envelope."""
    assert_envelope(client.get("/api/v2/report/1_1_1_5_nope_0987654321", headers=AUTH), 404, "Not Found")


@pytest.mark.parametrize("path", ["otp", "voice", "voice/import"])
def test_unknown_campaign_is_404(client: httpx.Client, path: str) -> None:
    """Every campaign endpoint answers 404 in the error envelope for an unknown campaign."""
    body = otp_body("0987654321") | {"name": "n", "content": "c"}
    assert_envelope(client.post(f"/api/v2/campaigns/99/{path}", json=body, headers=AUTH), 404, "Not Found")


def test_unknown_template_is_400(client: httpx.Client) -> None:
    """A call naming a template the campaign does not have is a 400 in the error envelope."""
    body = {"callees": ["0987654321"], "params": {"template_name": "no_such", "code_otp": "1"}}
    detail = assert_envelope(
        client.post("/api/v2/campaigns/1/otp", json=body, headers=AUTH), 400, "Bad Request"
    )
    assert "no_such" in detail


@pytest.mark.parametrize(
    "body",
    [
        {"params": {"template_name": "template_otp_1", "code_otp": "1"}},
        {"callees": "0987654321", "params": {"template_name": "template_otp_1", "code_otp": "1"}},
        {"callees": [], "params": {"template_name": "template_otp_1", "code_otp": "1"}},
        {"callees": ["0987654321"]},
        {"callees": ["0987654321"], "params": {"code_otp": "1"}},
        {"callees": ["0987654321"], "params": {"template_name": "template_otp_1"}},
        {
            "callees": ["0987654321"],
            "params": {"template_name": "template_otp_1", "code_otp": "1"},
            "callback_url": 5,
        },
        ["0987654321"],
    ],
    ids=[
        "no-callees",
        "callees-not-list",
        "empty-callees",
        "no-params",
        "no-template",
        "no-code",
        "bad-url",
        "list",
    ],
)
def test_invalid_otp_body_is_400(client: httpx.Client, body: Any) -> None:
    """An OTP request with a missing or mistyped field is a 400 in the error envelope."""
    assert_envelope(client.post("/api/v2/campaigns/1/otp", json=body, headers=AUTH), 400, "Bad Request")


def test_non_json_body_is_400(client: httpx.Client) -> None:
    """A campaign request whose body is not JSON is a 400 in the error envelope."""
    response = client.post("/api/v2/campaigns/1/otp", content=b"callees=0987654321", headers=AUTH)
    assert_envelope(response, 400, "Bad Request")


@pytest.mark.parametrize(
    ("phone", "accepted"),
    [
        ("0987654321", True),
        ("09876543210", True),
        ("+84987654321", False),
        ("84987654321", False),
        ("098765432", False),
        ("098765432101", False),
        ("09876abcde", False),
        ("1234567890", False),
    ],
)
def test_only_national_numbers_are_accepted(client: httpx.Client, phone: str, accepted: bool) -> None:
    """Callees must be 0 followed by 9 or 10 digits; anything else fails as Wrong Format."""
    results = client.post("/api/v2/campaigns/1/otp", json=otp_body(phone), headers=AUTH).json()["data"][
        "results"
    ]
    if accepted:
        assert (len(results["success"]), results["fail"]) == (1, [])
    else:
        assert (results["success"], results["fail"]) == ([], [{phone: "Wrong Format"}])


def test_blacklisted_number_is_refused_at_placement(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """0900000008 fails at placement with Blacklist and no call is placed for it."""
    results = client.post("/api/v2/campaigns/1/otp", json=otp_body("0900000008"), headers=AUTH).json()[
        "data"
    ]["results"]
    assert results == {"fail": [{"0900000008": "Blacklist"}], "success": []}
    assert sandbox.calls(phone="0900000008") == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "wrong-token"},
        {"Authorization": f"Basic {EXAMPLE_TOKEN}"},
    ],
    ids=["missing", "empty", "wrong", "other-scheme"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v2/campaigns/1/otp"),
        ("POST", "/api/v2/campaigns/1/voice"),
        ("POST", "/api/v2/campaigns/1/voice/import"),
        ("GET", f"/api/v2/report/{EXAMPLE_CDR['id']}"),
    ],
)
def test_missing_or_wrong_token_is_401(
    client: httpx.Client, headers: dict[str, str], method: str, path: str
) -> None:
    """Every campaign endpoint refuses a missing or wrong token with 401 in the error envelope."""
    response = client.request(method, path, json=otp_body("0987654321"), headers=headers)
    assert_envelope(response, 401, "Unauthorized")


def test_bearer_prefix_is_accepted(client: httpx.Client) -> None:
    """``Authorization: Bearer <token>`` works as well as the raw token."""
    response = client.get(
        f"/api/v2/report/{EXAMPLE_CDR['id']}", headers={"Authorization": f"Bearer {EXAMPLE_TOKEN}"}
    )
    assert response.status_code == 200


def test_tokens_expire_after_their_lifetime() -> None:
    """A token stops working once its lifetime has passed, and a new one can be fetched."""
    config = SandboxConfig(token_lifetime_seconds=0.3)
    with running_sandbox(config) as handle, httpx.Client(base_url=handle.url) as client:
        token = client.post(
            "/api/v1/users/generate_access_token", json={"secret_key": EXAMPLE_SECRET_KEY}
        ).json()["data"]["access_token"]
        report = f"/api/v2/report/{EXAMPLE_CDR['id']}"
        assert client.get(report, headers={"Authorization": token}).status_code == 200
        time.sleep(0.4)
        assert_envelope(client.get(report, headers={"Authorization": token}), 401, "Unauthorized")
        fresh = client.post(
            "/api/v1/users/generate_access_token", json={"secret_key": EXAMPLE_SECRET_KEY}
        ).json()["data"]["access_token"]
        assert client.get(report, headers={"Authorization": fresh}).status_code == 200


def test_provider_errors_on_unknown_paths_use_the_envelope(client: httpx.Client) -> None:
    """Unknown paths and wrong methods answer in the error envelope with 404 and 405."""
    assert_envelope(client.get("/api/v2/nothing", headers=AUTH), 404, "Not Found")
    assert_envelope(client.get("/api/v2/campaigns/1/otp", headers=AUTH), 405, "Method Not Allowed")
