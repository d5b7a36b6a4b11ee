"""A worker killed with SIGKILL while it delivers an event: the event is delivered anyway."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.receiver import running_receiver
from tests.support.redis_servers import wait_until
from tests.support.serve_process import dev_service
from tests.support.servers import free_port

API_KEY = "crash-test-key-0123456789"


@pytest.mark.long
def test_an_event_held_by_a_killed_worker_is_delivered_after_its_restart(
    redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL while the receiver holds the first delivery: after a restart every event arrives, in order."""
    with running_receiver(hang_first=30) as receiver:
        port, sandbox_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
        env |= {
            "OTP_REDIS_URL": redis_url,
            "OTP_API_KEYS": API_KEY,
            "OTP_WEBHOOK_URL": receiver.url,
            "OTP_WEBHOOK_SECRET": receiver.secret,
            "OTP_WEBHOOK_TIMEOUT_SECONDS": "0.5",  # a lease of 6 s: the takeover comes soon
        }
        log = tmp_path / "service.log"
        with dev_service(env, port, sandbox_port, log) as first:
            created = httpx.post(
                f"http://127.0.0.1:{port}/otp",
                json={"phone": "0987001122"},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert created.status_code == 201, created.text
            vid = created.json()["id"]
            wait_until(lambda: receiver.arrived >= 1, 10, "the first delivery to begin")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        killed_at = time.monotonic()
        # fresh ports: the killed process's may already be another test's
        with dev_service(env, free_port(), free_port(), log):
            types = receiver.wait_for(2, vid, timeout=30)
        assert time.monotonic() - killed_at < 60
    assert types[:2] == ["verification.created", "verification.delivery_updated"]
    assert receiver.bad_signatures == 0
