"""/readyz names each dependency's state; ready only when Redis answers and the provider takes our key."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx

from tests.support import service as support
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.servers import refused_port
from tests.support.service import ServiceHandle, running_service


def _readiness(service: ServiceHandle) -> httpx.Response:
    with service.client(api_key=None) as anonymous:
        return anonymous.get("/readyz")


def _settled(service: ServiceHandle) -> httpx.Response:
    """The answer once the provider check that starts with the service has finished."""
    answers: list[httpx.Response] = []

    def checked() -> bool:
        answers.append(_readiness(service))
        return bool(answers[-1].json().get("checks", {}).get("provider") != "unchecked")

    wait_until(checked, 10, "the first provider check")
    return answers[-1]


def test_ready_names_redis_and_the_provider(service: ServiceHandle) -> None:
    """With Redis up and the sandbox taking the secret key, /readyz is 200 and says so per dependency."""
    answer = _settled(service)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {"redis": "ok", "provider": "ok"}}


def test_a_refused_secret_key_is_not_ready_and_logged_with_host_and_operation(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A refused secret key makes /readyz 503 `provider: refused`; the log names host and operation."""
    autocall = support.test_settings(redis_url, sandbox.url, "http://127.0.0.1:1").autocall
    with running_service(
        redis_url, sandbox.url, autocall=replace(autocall, secret_key="wrong-key")
    ) as service:
        answer = _settled(service)
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "not_ready"
        assert answer.json()["checks"] == {"redis": "ok", "provider": "refused"}
        failures = [
            json.loads(line)
            for line in service.logs.getvalue().splitlines()
            if '"autocall.request.failed"' in line
        ]
        assert failures, service.logs.getvalue()
        assert failures[0]["host"] == sandbox.url.removeprefix("http://")
        assert failures[0]["operation"] == "token"
        assert "wrong-key" not in service.logs.getvalue()
        with service.client() as client:
            scraped = client.get("/metrics").text
        assert 'otp_provider_errors_total{error="ProviderAuthFailed",operation="token"}' in scraped


def test_an_unreachable_provider_is_not_ready(redis_url: str) -> None:
    """With nothing listening at the provider's address, /readyz is 503 `provider: unreachable`."""
    with refused_port() as port, running_service(redis_url, f"http://127.0.0.1:{port}") as service:
        answer = _settled(service)
        assert answer.status_code == 503
        assert answer.json()["checks"] == {"redis": "ok", "provider": "unreachable"}
        assert "not ready: provider unreachable" in answer.json()["detail"]


def test_a_provider_that_goes_away_after_start_makes_readyz_not_ready_until_it_is_back(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A provider that fails after a good start is noticed at the next check (its token lasts months,
    so the check asks for a new one), and /readyz is ready again once the provider answers."""
    with running_service(redis_url, sandbox.url) as service:
        assert _settled(service).status_code == 200

        def provider_is(state: str) -> bool:
            service.clock.advance(31)  # past the recheck interval: each poll may start a check
            return bool(_readiness(service).json().get("checks", {}).get("provider") == state)

        sandbox.config.provider_faults.error_rate = 1.0
        try:
            wait_until(lambda: provider_is("unreachable"), 10, "the outage noticed")
            assert _readiness(service).status_code == 503
        finally:
            sandbox.config.provider_faults.error_rate = 0.0
        wait_until(lambda: provider_is("ok"), 10, "the provider back")
        assert _readiness(service).status_code == 200
