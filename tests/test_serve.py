"""`otpservice serve` as operators run it: secrets from files, several workers, one set of metrics."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from otpservice.sandbox.config import EXAMPLE_SECRET_KEY
from tests.support.flows import InBackground
from tests.support.receiver import Receiver
from tests.support.redis_servers import standalone_server, wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.serve_process import METRICS_KEY, PRODUCTION_API_KEY, production_env, running_serve


def _total(text: str, metric: str) -> float:
    """The sum of every series of ``metric`` in an exposition."""
    pattern = re.compile(rf"^{metric}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


@pytest.mark.long
def test_two_workers_with_every_secret_from_a_file_serve_and_count_as_one(
    tmp_path: Path, sandbox: SandboxHandle, receiver: Receiver
) -> None:
    """With all six secrets given only as *_FILE, `serve --workers 2` becomes ready, reaches a
    password-protected Redis, places calls with the provider key, signs events with the webhook secret,
    and every scrape with the metrics key reads the totals of both workers."""
    redis_password = "redis-pw-0123456789abcdef"
    with standalone_server() as redis:  # its own server: its dispatcher must not take other tests' events
        with redis.client() as admin:
            admin.config_set("requirepass", redis_password)
        secrets = {
            "OTP_REDIS_URL": f"redis://:{redis_password}@127.0.0.1:{redis.port}/0",
            "OTP_API_KEYS": PRODUCTION_API_KEY,
            "OTP_PEPPER": "file-pepper-that-is-long-enough-0123456789",
            "OTP_AUTOCALL_SECRET_KEY": EXAMPLE_SECRET_KEY,
            "OTP_WEBHOOK_SECRET": receiver.secret,
            "OTP_METRICS_KEYS": METRICS_KEY,
        }
        env = production_env("", sandbox.url, OTP_WEBHOOK_URL=receiver.url)
        for name, value in secrets.items():
            (tmp_path / name).write_text(value + "\n")
            env.pop(name, None)
            env[f"{name}_FILE"] = str(tmp_path / name)
        with running_serve(env, tmp_path / "serve.log", workers=2) as serve:
            with serve.client(api_key=None) as anonymous:
                wait_until(lambda: anonymous.get("/readyz").status_code == 200, 10, "ready")
            for last_digit in range(6):
                # a new connection each time, so the kernel spreads the starts over both workers
                with serve.client() as client:
                    started = client.post("/otp", json={"phone": f"098765432{last_digit}"})
                    assert started.status_code == 201, serve.log.read_text()[-3000:]
            assert sandbox.calls("0987654321"), "the provider refused the secret key read from its file"
            receiver.wait_for(6)
            assert receiver.bad_signatures == 0
            with serve.client(METRICS_KEY) as scraper:
                seen = [
                    _total(scraper.get("/metrics").text, "otp_verifications_started_total") for _ in range(8)
                ]
                assert scraper.post("/otp", json={"phone": "0987654321"}).status_code == 401
            assert seen == [6.0] * 8  # one worker alone would have counted some of them
            with serve.client() as api:
                assert api.get("/metrics").status_code == 200  # an API key may scrape too


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


@pytest.mark.long
def test_two_workers_told_to_stop_refuse_new_connections_at_once_and_finish_those_in_flight(
    tmp_path: Path, redis_url: str, sandbox: SandboxHandle
) -> None:
    """After SIGTERM, `serve --workers 2` refuses new connections within a second (they go to another
    replica) instead of letting the kernel queue them unanswered until it exits, and still answers the
    start in flight."""
    env = production_env(redis_url, sandbox.url)
    with running_serve(env, tmp_path / "serve.log", workers=2) as serve:
        port = int(serve.url.rsplit(":", 1)[1])
        with serve.client(api_key=None) as anonymous:
            wait_until(lambda: anonymous.get("/readyz").status_code == 200, 10, "ready")
        sandbox.config.provider_faults.latency_seconds = 3.0
        starting = InBackground(serve, lambda client: client.post("/otp", json={"phone": "0912000777"}))
        wait_until(
            lambda: '"event":"verification.created"' in serve.log.read_text().replace(" ", ""), 5, "the start"
        )
        os.kill(serve.pid, signal.SIGTERM)
        told = time.monotonic()
        wait_until(lambda: _refused(port), 2, "new connections refused")
        refused_after = time.monotonic() - told
        assert starting.answer(timeout=15).status_code == 201, serve.log.read_text()[-2000:]
    assert refused_after < 2
