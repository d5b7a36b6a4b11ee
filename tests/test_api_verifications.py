"""Creating and reading verifications: phone handling, auth, validation, provider answers."""

from __future__ import annotations

import pytest

from tests.support.flows import assert_problem, create, heard_code
from tests.support.sandbox import SandboxHandle
from tests.support.service import API_KEY, ServiceHandle


def test_create_places_call_and_hides_code(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """POST /otp answers 201 with the Verification, and the code only reaches the phone."""
    with service.client() as client:
        body = create(client, "0987654321", metadata={"user": "u-1"})
    assert body["status"] == "pending"
    assert body["phone"] == "+84987654321"
    assert body["channel"] == "voice"
    assert (body["attempts"], body["max_attempts"], body["attempts_remaining"]) == (0, 5, 5)
    assert body["sends"] == 1
    assert body["metadata"] == {"user": "u-1"}
    assert body["delivery"]["status"] in ("calling", "answered")
    assert body["delivery"]["call_id"].endswith("_0987654321")
    code = heard_code(sandbox, "0987654321")
    assert len(code) == 6
    assert code not in str(body).replace(body["delivery"]["call_id"], "")


@pytest.mark.parametrize(
    "typed",
    ["0987654321", "+84987654321", "84987654321", "098 765 4321", "+84-98-765-4321", "\u00a00987654321\t"],
)
def test_phone_forms_normalise(service: ServiceHandle, sandbox: SandboxHandle, typed: str) -> None:
    """Each usual way of typing a Vietnamese number gives E.164 back and the national form to the provider."""
    with service.client() as client:
        body = create(client, typed)
    assert body["phone"] == "+84987654321"
    assert sandbox.calls("0987654321")[-1]["phone"] == "0987654321"


@pytest.mark.parametrize(
    "phone",
    [
        "12345",
        "not a number",
        "+14155552671",
        "19001234",
        "0123456789",
        "+84 987 654 321 999",
        "+",
        "\x1c0987654321",  # padding the published pattern's \s does not allow (Python's strip() took it)
        "0987654321\x85",
    ],
)
def test_invalid_phone_is_refused_without_a_call(
    service: ServiceHandle, sandbox: SandboxHandle, phone: str
) -> None:
    """Invalid, foreign and premium-rate numbers get 422 invalid_phone and no call is placed."""
    before = len(sandbox.calls())
    with service.client() as client:
        assert_problem(client.post("/otp", json={"phone": phone}), 422, "invalid_phone")
    assert len(sandbox.calls()) == before


def test_code_length_and_ttl_are_honoured(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """code_length and ttl_seconds shape the code spoken and the expiry."""
    with service.client() as client:
        body = create(client, "0912345678", code_length=8, ttl_seconds=120)
    assert len(heard_code(sandbox, "0912345678")) == 8
    assert body["code_length"] == 8
    assert body["expires_at"] > body["created_at"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "phone"),
        ({"phone": 987654321}, "phone"),
        ({"phone": "0987654321", "code_length": 3}, "code_length"),
        ({"phone": "0987654321", "code_length": 11}, "code_length"),
        ({"phone": "0987654321", "ttl_seconds": 59}, "ttl_seconds"),
        ({"phone": "0987654321", "ttl_seconds": 601}, "ttl_seconds"),
        ({"phone": "0987654321", "metadata": "x"}, "metadata"),
        ({"phone": "0987654321", "surprise": 1}, "surprise"),
        ({"phone": "0987654321", "a`b": 1}, "a`b"),
    ],
)
def test_body_validation_is_422_naming_the_field(
    service: ServiceHandle, sandbox: SandboxHandle, payload: dict[str, object], field: str
) -> None:
    """A body that breaks the schema gets 422 validation_error naming the field, and places no call."""
    before = len(sandbox.calls())
    with service.client() as client:
        body = assert_problem(client.post("/otp", json=payload), 422, "validation_error")
    assert [error["field"] for error in body["errors"]] == [field]
    assert len(sandbox.calls()) == before


def test_malformed_json_is_a_problem(service: ServiceHandle) -> None:
    """A body that is not JSON is refused with a problem document, not a 500."""
    with service.client() as client:
        response = client.post("/otp", content=b"{nope", headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "code" in response.json()


def test_api_key_is_required(service: ServiceHandle) -> None:
    """Without the API key, with a wrong one, or with the right one under another scheme, every
    client endpoint answers 401."""
    for key in (None, "wrong-key-0000000000000"):
        with service.client(api_key=key) as client:
            assert_problem(client.post("/otp", json={"phone": "0987654321"}), 401, "unauthorized")
            assert_problem(client.get("/otp/vf_x"), 401, "unauthorized")
            assert_problem(client.post("/otp/vf_x/resend"), 401, "unauthorized")
            assert_problem(client.delete("/otp/vf_x"), 401, "unauthorized")
            assert_problem(client.post("/verify", json={"id": "vf_x", "code": "123456"}), 401, "unauthorized")
    with service.client(api_key=None) as client:
        basic = {"Authorization": f"Basic {API_KEY}"}
        assert_problem(client.get("/otp/vf_x", headers=basic), 401, "unauthorized")


def test_unknown_id_is_404(service: ServiceHandle) -> None:
    """An id that never existed answers 404 not_found on every endpoint."""
    with service.client() as client:
        assert_problem(client.get("/otp/vf_0000"), 404, "not_found")
        assert_problem(client.post("/otp/vf_0000/resend"), 404, "not_found")
        assert_problem(client.delete("/otp/vf_0000"), 404, "not_found")
        assert_problem(client.post("/verify", json={"id": "vf_0000", "code": "123456"}), 404, "not_found")


def test_read_returns_the_verification(service: ServiceHandle) -> None:
    """GET /otp/{id} answers the same verification that was created."""
    with service.client() as client:
        created = create(client)
        read = client.get(f"/otp/{created['id']}")
    assert read.status_code == 200
    assert read.json()["id"] == created["id"]
    assert read.json()["phone"] == created["phone"]


def test_provider_rejection_is_recorded(service: ServiceHandle) -> None:
    """A number the provider refuses gets 422 provider_rejected with the id; the verification is failed."""
    with service.client() as client:
        body = assert_problem(client.post("/otp", json={"phone": "0900000008"}), 422, "provider_rejected")
        verification = client.get(f"/otp/{body['id']}").json()
    assert body["reason"] == "Blacklist"
    assert verification["status"] == "failed"
    assert verification["delivery"]["status"] == "rejected"
    assert verification["delivery"]["reason"] == "Blacklist"


def test_failed_verification_answers_409_failed(service: ServiceHandle) -> None:
    """A verification whose call was refused answers 409 failed to verify, resend and cancel."""
    with service.client() as client:
        vid = client.post("/otp", json={"phone": "0900000008"}).json()["id"]
        service.clock.advance(30)
        assert_problem(client.post("/verify", json={"id": vid, "code": "123456"}), 409, "failed")
        assert_problem(client.post(f"/otp/{vid}/resend"), 409, "failed")
        assert_problem(client.delete(f"/otp/{vid}"), 409, "failed")


def test_health_endpoints_need_no_key(service: ServiceHandle) -> None:
    """/healthz and /readyz answer without an API key when Redis is up."""
    with service.client(api_key=None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code in {200, 503}  # 503 only while the provider is checked


def test_unknown_route_and_method_are_problems(service: ServiceHandle) -> None:
    """Unknown routes and methods answer problem documents too."""
    with service.client() as client:
        assert_problem(client.get("/nope"), 404, "not_found")
        assert_problem(client.get("/_sandbox/calls"), 404, "not_found")  # the sandbox is never mounted here
        assert_problem(client.put("/verify", json={}), 405, "method_not_allowed")
