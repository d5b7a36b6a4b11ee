"""The repair queue: writes retried in the background, and what a shutdown does to those left."""

from __future__ import annotations

import io
import json

from otpservice.domain.errors import StorageUnavailable
from otpservice.logs import configure_logging
from otpservice.service.repairs import RepairQueue


async def test_a_repair_still_failing_at_shutdown_is_logged_as_abandoned() -> None:
    """A repair storage still refuses when the queue closes is stopped with a line naming it (most
    repairs nothing else retries, so an operator must be able to see what was lost)."""

    async def storage_down() -> None:
        raise StorageUnavailable()

    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        repairs = RepairQueue(first_delay=0.01, max_delay=0.02)
        repairs.submit("void_create", storage_down, verification_id="vf_x")
        await repairs.close(grace_seconds=0.1)
    finally:
        configure_logging("INFO")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    abandoned = [line for line in lines if line.get("event") == "repair.abandoned"]
    assert [(a["repair"], a["verification_id"], a["reason"]) for a in abandoned] == [
        ("void_create", "vf_x", "shutdown")
    ]
    assert repairs.pending == 0
