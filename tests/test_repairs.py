"""The repair queue: writes retried in the background, and what a shutdown does to those left."""

from __future__ import annotations

import io
import json

from prometheus_client import REGISTRY

from otpservice.domain.errors import StorageUnavailable, VerificationNotFound
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


async def test_a_repair_whose_record_storage_lost_is_counted_not_reported_as_a_bug() -> None:
    """A repair that finds its verification gone (a failover or restart lost the last writes) stops
    with a warning naming it and a count, not an error with a traceback."""

    async def record_gone() -> None:
        raise VerificationNotFound("vf_x")

    before = REGISTRY.get_sample_value("otp_repairs_record_lost_total", {"repair": "record_placed_call"}) or 0
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        repairs = RepairQueue(first_delay=0.01, max_delay=0.02)
        repairs.submit("record_placed_call", record_gone, verification_id="vf_x")
        await repairs.close(grace_seconds=1)
    finally:
        configure_logging("INFO")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["level"], line["verification_id"]) for line in lines] == [
        ("repair.record_lost", "warning", "vf_x")
    ]
    after = REGISTRY.get_sample_value("otp_repairs_record_lost_total", {"repair": "record_placed_call"})
    assert after == before + 1
