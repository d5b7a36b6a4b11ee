"""/metrics exposes request and business counters to key holders, with no codes, numbers or credentials."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.flows import create, heard_code
from tests.support.sandbox import SandboxHandle
from tests.support.serve_process import METRICS_KEY, production_env, running_serve
from tests.support.service import ServiceHandle, running_service


def test_metrics_count_the_flow(service: ServiceHandle, sandbox: SandboxHandle) -> None:
    """After a flow, /metrics shows verifications, calls and code checks, grouped by route."""
    with service.client() as client:
        vid = create(client)["id"]
        code = heard_code(sandbox, "0987654321")
        client.post("/verify", json={"id": vid, "code": code})
    with service.client(api_key=None) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
    with service.client() as client:
        text = client.get("/metrics").text
    assert "otp_verifications_started_total" in text
    assert 'otp_calls_total{outcome="placed"}' in text
    assert re.search(r'otp_code_checks_total\{outcome="approved",tenant="t[0-9a-f]+"\}', text)
    assert "otp_http_requests_total" in text
    assert code not in text.replace("e+0", "")
    assert "0987654321" not in text
    assert "/callbacks/autocall/vf_" not in text


def _total(text: str, metric: str) -> float:
    """The sum of every series of ``metric`` in an exposition."""
    pattern = re.compile(rf"^{metric}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


@pytest.mark.long
def test_every_scrape_of_a_multi_worker_serve_answers_the_totals_of_all_workers(
    redis_url: str, sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """With `serve --workers 2`, six starts spread over both workers read 6 on every one of many scrapes."""
    env = production_env(redis_url, sandbox.url)
    with running_serve(env, tmp_path / "serve.log", workers=2) as serve, serve.client() as api:
        for last_digit in range(6):
            # a new connection each time, so the kernel spreads the starts over both workers
            with serve.client() as client:
                assert client.post("/otp", json={"phone": f"098765432{last_digit}"}).status_code == 201
        with serve.client(METRICS_KEY) as scraper:
            seen = [_total(scraper.get("/metrics").text, "otp_verifications_started_total") for _ in range(8)]
        assert seen == [6.0] * 8
        assert api.get("/metrics").status_code == 200  # an API key may scrape too


def test_a_metrics_key_reads_metrics_and_nothing_else(redis_url: str, sandbox: SandboxHandle) -> None:
    """A key from OTP_METRICS_KEYS reads /metrics; every API route answers it 401, as to a stranger."""
    with running_service(redis_url, sandbox.url, metrics_keys=(METRICS_KEY,)) as service:
        with service.client(METRICS_KEY) as scraper:
            assert scraper.get("/metrics").status_code == 200
            refused = scraper.post("/otp", json={"phone": "0987654321"})
            assert refused.status_code == 401
            assert refused.json()["code"] == "unauthorized"
            assert scraper.get("/otp/vf_0000000000000000").status_code == 401
        with service.client("not-a-metrics-key-0123456789") as stranger:
            assert stranger.get("/metrics").status_code == 401
