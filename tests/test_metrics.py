"""/metrics exposes request and business counters to key holders, with no codes, numbers or credentials."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from otpservice.cli.service import forget_dead_workers
from tests.support.flows import create, heard_code
from tests.support.sandbox import SandboxHandle
from tests.support.serve_process import METRICS_KEY
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


def test_a_request_refused_for_its_key_is_counted_and_logged_as_401(service: ServiceHandle) -> None:
    """A request without a valid API key is counted and logged with its 401, not as a server error."""
    route = 'path="/otp/{verification_id}"'

    def server_errors(text: str) -> list[str]:
        # (other tests in this process may have answered this route 500 on purpose: a corrupt record)
        return [
            line
            for line in text.splitlines()
            if line.startswith("otp_http_requests_error_total")
            and route in line
            and 'status_code="500"' in line
        ]

    with service.client() as client:
        before = server_errors(client.get("/metrics").text)
        with service.client(api_key=None) as anonymous:
            assert anonymous.get("/otp/vf_0000000000000000").status_code == 401
        text = client.get("/metrics").text
    counted = [
        line for line in text.splitlines() if line.startswith("otp_http_requests_total") and route in line
    ]
    assert any('status_code="401"' in line for line in counted), counted
    assert server_errors(text) == before
    logged = service.logs.getvalue()
    assert '"status": 500' not in logged
    assert '"status":500' not in logged


def test_a_killed_workers_requests_in_progress_are_forgotten_when_another_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that died with requests in flight stops counting them once another worker starts."""
    worker = (
        "from prometheus_client import Gauge\nGauge('in_progress', 'x', multiprocess_mode='livesum').inc(8)\n"
    )
    subprocess.run(  # noqa: S603 - this interpreter, a fixed program
        [sys.executable, "-c", worker],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        check=True,
    )
    assert list(tmp_path.glob("gauge_livesum_*.db"))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    forget_dead_workers()
    assert list(tmp_path.glob("gauge_livesum_*.db")) == []
