"""The reconciler at scale: bounded concurrency, backoff from a provider that is down, lost placements."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.connection import connect
from otpservice.adapters.storage.scripts import Storage
from otpservice.adapters.storage.store import VerificationStore
from otpservice.domain.clock import to_millis
from otpservice.domain.codes import CodeHasher
from otpservice.redis_url import parse_redis_url
from otpservice.service.delivery import CONCURRENCY, claim_lease_seconds
from tests.support.flows import create
from tests.support.redis_servers import standalone_server, sync_client, wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import PEPPER, ScriptedCodes, ServiceHandle, running_service

FAST_RECONCILE: dict[str, Any] = {"reconcile_after_seconds": 0, "reconcile_interval_seconds": 0.05}


class FakeProvider:
    """Places every call (answering its id) and never calls back; reports come from ``report``."""

    def __init__(self, report: Callable[[httpx.Request], Any]):
        self._ids = itertools.count(1)
        self._report = report
        self.reports = 0
        self.placed: set[str] = set()
        self.verification_of: dict[str, str] = {}  # call id -> verification id (from its callback URL)
        self.asked_at: list[float] = []  # about calls it placed (the shared Redis holds other tests' too)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("generate_access_token"):
            return httpx.Response(200, json={"data": {"access_token": "t", "expire_at": 3600}})
        if path.endswith("/otp"):
            sent = json.loads(request.content)
            call_id = f"1_1_1_5_{next(self._ids)}_{sent['callees'][0]}"
            self.placed.add(call_id)
            self.verification_of[call_id] = urlsplit(sent["callback_url"]).path.split("/")[3]
            return httpx.Response(
                200, json={"data": {"campaign_id": "1", "results": {"fail": [], "success": [call_id]}}}
            )
        self.reports += 1
        if request.url.path.rsplit("/", 1)[1] in self.placed:
            self.asked_at.append(time.monotonic())
        answer = self._report(request)
        if asyncio.iscoroutine(answer):
            answer = await answer
        assert isinstance(answer, httpx.Response)
        return answer


@contextmanager
def ticking(service: ServiceHandle) -> Iterator[None]:
    """Move the service clock a second every 10 ms, so calls keep coming due while a test watches."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.01):
            service.clock.advance(1)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()


def test_an_unreachable_provider_is_asked_less_and_less_often() -> None:
    """Report requests that fail back off exponentially instead of repeating every interval."""
    provider = FakeProvider(lambda _request: httpx.Response(503, text="down"))
    transport = httpx.MockTransport(provider)
    # A server of its own: the ticking clock brings every other test's scheduled calls due too, and
    # a round stops asking at the first failure, which could always be another test's call.
    with (
        standalone_server() as server,
        running_service(
            server.url, "http://provider.invalid", provider_transport=transport, **FAST_RECONCILE
        ) as service,
    ):
        with service.client() as client:
            create(client, "0912000777")
        with ticking(service):
            wait_until(lambda: len(provider.asked_at) >= 4, 10, "four report requests")
    # every 0.05 s without backing off; backing off, 0.1, 0.2, then 0.4 s apart (more under load)
    gaps = [later - earlier for earlier, later in itertools.pairwise(provider.asked_at[:4])]
    assert gaps[-1] >= 0.3, gaps


def test_reports_are_asked_concurrently_within_the_bound(redis_url: str) -> None:
    """Many overdue calls are checked in parallel, never more than CONCURRENCY at once."""
    in_flight = 0
    most = 0

    async def slow_unfinished_report(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1
        call_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json={"data": {"id": call_id, "campaign_id": "1", "status": ""}})

    provider = FakeProvider(slow_unfinished_report)
    transport = httpx.MockTransport(provider)
    with running_service(
        redis_url, "http://provider.invalid", provider_transport=transport, **FAST_RECONCILE
    ) as service:
        with service.client() as client:
            for n in range(3 * CONCURRENCY):
                create(client, f"09120008{n:02d}")
        with ticking(service):
            wait_until(
                lambda: provider.reports >= 3 * CONCURRENCY, 10, "every overdue call being asked about"
            )
    assert 1 < most <= CONCURRENCY


def test_a_call_is_asked_about_before_its_claim_ends_even_in_a_backlog(redis_url: str) -> None:
    """With many calls due at once, each is claimed only when a check can start, so the provider is
    asked about it while its claim still hides it from other workers (never twice at once)."""
    asked_late: list[str] = []
    asked: set[str] = set()
    redis = sync_client(redis_url)

    async def unfinished_report(request: httpx.Request) -> httpx.Response:
        call_id = request.url.path.rsplit("/", 1)[1]
        vid = provider.verification_of.get(call_id)
        if vid is not None:
            claim_ends = redis.zscore(keys.schedule_key_for(vid), keys.scheduled_call(vid, 1))
            if claim_ends is not None and claim_ends <= to_millis(service.clock.now()):
                asked_late.append(call_id)
            asked.add(call_id)
            service.clock.advance(step)  # a slow provider: a sixteenth of a claim's lease per report
            # held a moment, so that checks in other slots cannot run through many reports while
            # one just claimed is on its way to its own
            await asyncio.sleep(0.02)
        return httpx.Response(200, json={"data": {"id": call_id, "campaign_id": "1", "status": ""}})

    provider = FakeProvider(unfinished_report)
    transport = httpx.MockTransport(provider)
    calls = 130  # enough that, all claimed at once, the last wait past 7 leases' worth of reports
    try:
        with running_service(
            redis_url,
            "http://provider.invalid",
            provider_transport=transport,
            reconcile_after_seconds=600,
            reconcile_interval_seconds=0.05,
        ) as service:
            step = claim_lease_seconds(service.settings) / 16
            with service.client() as client:
                first = secrets.randbelow(10**6)
                for n in range(calls):  # numbers of their own (each has a verification of its own)
                    create(client, f"0916{(first + n) % 10**6:06d}")
            service.clock.advance(601)  # every call comes due at once
            wait_until(lambda: len(asked) >= calls, 20, "every call being asked about")
    finally:
        redis.close()
    assert asked_late == []


def test_a_placement_nobody_recorded_becomes_unknown_and_stays_verifiable(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A resend begun by a process that died before placing or recording it is settled as unknown."""
    codes = ScriptedCodes("111111")
    with (
        running_service(redis_url, sandbox.url, randbelow=codes, **FAST_RECONCILE) as service,
        service.client() as client,
    ):
        vid = create(client)["id"]
        # what a crash leaves: the next send begun, its code stored, the call never recorded
        hasher = CodeHasher(PEPPER, service.settings.argon2)
        seq = asyncio.run(_begin_send(redis_url, vid, hasher.hash(vid, "222222"), service.clock.now()))
        assert client.get(f"/otp/{vid}").json()["delivery"]["status"] != "unknown"
        with ticking(service):
            wait_until(
                lambda: client.get(f"/otp/{vid}").json()["delivery"]["status"] == "unknown",
                10,
                "the unrecorded placement being settled",
            )
        delivery = client.get(f"/otp/{vid}").json()["delivery"]
        approved = client.post("/verify", json={"id": vid, "code": "222222"}).json()
    assert delivery["reason"]
    assert (approved["valid"], approved["delivery"]["status"]) == (True, "unknown")
    assert seq == 2


async def _begin_send(redis_url: str, vid: str, code_hash: str, now: datetime) -> int:
    client = connect(parse_redis_url(redis_url), timeout_seconds=1)
    storage = Storage(client, operation_timeout_seconds=5)
    try:
        store = VerificationStore(storage, retention_seconds=86400)
        begun = await store.begin_send(
            vid,
            now + timedelta(seconds=60),
            token="crashed",
            cooldown_seconds=30,
            max_sends=5,
            code_hash=code_hash,
            ttl_seconds=300,
            placement_deadline=now + timedelta(seconds=80),
        )
        assert isinstance(begun, int)
        return begun
    finally:
        await storage.close()
