"""When the provider fails: 503 provider_unavailable, and nothing pending is left behind."""

from __future__ import annotations

import httpx

from tests.support.flows import assert_problem, create, heard_code
from tests.support.sandbox import SandboxHandle
from tests.support.servers import free_port
from tests.support.service import ServiceHandle, running_service


def _unavailable_then_failed(service: ServiceHandle) -> None:
    with service.client() as client:
        response = client.post("/otp", json={"phone": "0987654321"})
        body = assert_problem(response, 503, "provider_unavailable")
        assert int(response.headers["retry-after"]) > 0
        verification = client.get(f"/otp/{body['id']}").json()
    assert verification["status"] == "failed"
    assert verification["delivery"]["status"] == "failed"


def test_provider_errors_are_503_and_leave_nothing_pending(
    service: ServiceHandle, sandbox: SandboxHandle
) -> None:
    """A provider answering 503 gets 503 provider_unavailable and the verification is failed, not pending."""
    sandbox.config.provider_faults.error_rate = 1.0
    _unavailable_then_failed(service)


def test_provider_500_is_503(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A provider answering 500 is reported the same way."""
    sandbox.config.provider_faults.error_rate = 1.0
    sandbox.config.provider_faults.error_status = 500
    _unavailable_then_failed(service)


def test_provider_timeout_is_503(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A provider that never answers times out (read timeout) into 503 provider_unavailable."""
    with service.client() as client:
        create(client, "0912345678")  # the token is fetched lazily: fetch it now, so only the call hangs
    sandbox.config.provider_faults.hang = True
    _unavailable_then_failed(service)


def test_unreachable_provider_is_503(redis_url: str) -> None:
    """A provider nobody listens for gets 503 provider_unavailable."""
    with running_service(redis_url, f"http://127.0.0.1:{free_port()}") as service:
        _unavailable_then_failed(service)


def test_proxy_html_page_is_503(redis_url: str) -> None:
    """An HTML error page from a proxy in front of the provider is 503, never a 500."""

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("generate_access_token"):
            return httpx.Response(200, json={"data": {"access_token": "t", "expire_at": 3600}})
        return httpx.Response(502, text="<html><body>Bad Gateway</body></html>")

    with running_service(
        redis_url, "http://provider.invalid", provider_transport=httpx.MockTransport(provider)
    ) as s:
        _unavailable_then_failed(s)


def test_resend_during_outage_keeps_old_code(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """A resend the provider cannot place is 503, counts no send, and the old code still works."""
    with service.client() as client:
        vid = create(client)["id"]
        old = heard_code(sandbox, "0987654321")
        service.clock.advance(30)
        sandbox.config.provider_faults.error_rate = 1.0
        refused = client.post(f"/otp/{vid}/resend")
        assert_problem(refused, 503, "provider_unavailable")
        assert int(refused.headers["retry-after"]) > 0
        assert client.get(f"/otp/{vid}").json()["sends"] == 1
        assert client.post("/verify", json={"id": vid, "code": old}).json()["valid"] is True


def test_resend_refused_connection_gives_cooldown_back(redis_url: str, sandbox: SandboxHandle) -> None:
    """When the provider surely never got the resend (connection refused), the cooldown is given back."""
    with running_service(redis_url, sandbox.url) as service, service.client() as client:
        vid = create(client)["id"]
        service.clock.advance(30)
        before = client.get(f"/otp/{vid}").json()["resend_available_at"]
        with running_service(redis_url, f"http://127.0.0.1:{free_port()}") as down, down.client() as other:
            down.clock.advance(30)
            assert_problem(other.post(f"/otp/{vid}/resend"), 503, "provider_unavailable")
        assert client.get(f"/otp/{vid}").json()["resend_available_at"] == before


def _provider_answering(placement: dict[str, object]) -> httpx.MockTransport:
    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("generate_access_token"):
            return httpx.Response(200, json={"data": {"access_token": "t", "expire_at": 3600}})
        return httpx.Response(200, json={"data": {"campaign_id": "1", "results": placement}})

    return httpx.MockTransport(provider)


def test_opaque_call_id_is_still_tracked(redis_url: str) -> None:
    """A call id that does not end in the national number is still taken as the call's id."""
    transport = _provider_answering({"fail": [], "success": ["1_1_1_5_abc_84987654321"]})
    with (
        running_service(redis_url, "http://provider.invalid", provider_transport=transport) as service,
        service.client() as client,
    ):
        created = create(client)
    assert created["delivery"]["call_id"] == "1_1_1_5_abc_84987654321"
    assert created["status"] == "pending"


def test_placement_naming_no_call_is_503(redis_url: str) -> None:
    """An answer that neither accepts nor refuses the number is treated like a lost answer: 503, failed."""
    transport = _provider_answering({"fail": [], "success": []})
    with running_service(redis_url, "http://provider.invalid", provider_transport=transport) as service:
        _unavailable_then_failed(service)
