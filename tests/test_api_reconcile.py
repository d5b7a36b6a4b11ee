"""Call outcomes are found even when the provider's callbacks are lost."""

from __future__ import annotations

import time
from typing import Any

import httpx

from otpservice.adapters.storage.keys import schedule_key_for, scheduled_call
from tests.support.flows import create
from tests.support.redis_servers import sync_client
from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle, running_service

FAST_RECONCILE: dict[str, Any] = {"reconcile_after_seconds": 0, "reconcile_interval_seconds": 0.05}


def wait_for_delivery(service: ServiceHandle, client: httpx.Client, vid: str, wanted: str) -> dict[str, Any]:
    """Advance the service clock until the delivery reaches ``wanted`` (or fail after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        verification: dict[str, Any] = client.get(f"/otp/{vid}").json()
        if verification["delivery"]["status"] == wanted:
            return verification
        assert time.monotonic() < deadline, verification["delivery"]
        service.clock.advance(1)
        time.sleep(0.05)


def test_lost_callback_is_recovered_from_the_call_report(redis_url: str, sandbox: SandboxHandle) -> None:
    """With every callback dropped, the call's outcome still arrives, read from the provider's report."""
    sandbox.config.callback_faults.drop = True
    with running_service(redis_url, sandbox.url, **FAST_RECONCILE) as service, service.client() as client:
        vid = create(client, "0900000002")["id"]
        final = wait_for_delivery(service, client, vid, "busy")
    assert final["delivery"]["provider_status"] == "BUSY"


def test_report_outage_is_retried(redis_url: str, sandbox: SandboxHandle) -> None:
    """A provider that cannot give the report for a while is asked again until it can."""
    sandbox.config.callback_faults.drop = True
    # due a second after it is placed (the test's clock), so not asked about before the outage begins
    due_later = FAST_RECONCILE | {"reconcile_after_seconds": 1}
    with running_service(redis_url, sandbox.url, **due_later) as service, service.client() as client:
        vid = create(client)["id"]
        sandbox.config.provider_faults.error_rate = 1.0
        service.clock.advance(1)
        time.sleep(0.3)
        assert client.get(f"/otp/{vid}").json()["delivery"]["status"] == "calling"
        sandbox.config.provider_faults.error_rate = 0.0
        wait_for_delivery(service, client, vid, "answered")


def test_calls_with_a_callback_are_not_tracked_any_more(redis_url: str, service: ServiceHandle) -> None:
    """Once a callback brings the final status, the call leaves the open-calls set."""
    with service.client() as client:
        vid = create(client)["id"]
        wait_for_delivery(service, client, vid, "answered")
    redis = sync_client(redis_url)
    try:
        assert redis.zscore(schedule_key_for(vid), scheduled_call(vid, 1)) is None
    finally:
        redis.close()


def test_reconciliation_gives_up_on_calls_that_never_end(redis_url: str, sandbox: SandboxHandle) -> None:
    """A call that never reports an end stops being polled after the give-up time."""
    sandbox.config.callback_faults.drop = True
    sandbox.config.ring_seconds = 3600
    settings = FAST_RECONCILE | {"reconcile_give_up_seconds": 60}
    with running_service(redis_url, sandbox.url, **settings) as service, service.client() as client:
        vid = create(client)["id"]
        redis = sync_client(redis_url)
        try:
            assert redis.zscore(schedule_key_for(vid), scheduled_call(vid, 1)) is not None
            deadline = time.monotonic() + 10
            while redis.zscore(schedule_key_for(vid), scheduled_call(vid, 1)) is not None:
                assert time.monotonic() < deadline
                service.clock.advance(10)
                time.sleep(0.05)
        finally:
            redis.close()
        assert client.get(f"/otp/{vid}").json()["delivery"]["status"] == "calling"
