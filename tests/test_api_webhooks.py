"""Delivery events: signed per Standard Webhooks, durable, in order, to a real receiver."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from click.testing import CliRunner
from prometheus_client import REGISTRY

from otpservice.cli import main
from otpservice.tenants import Tenant, hash_api_key
from tests.support.flows import create, heard_code, wrong_code
from tests.support.receiver import Receiver, running_receiver
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import API_KEY, ServiceHandle, running_service


def _number() -> str:
    return f"097{secrets.randbelow(10**7):07d}"


def _hooked(receiver: Receiver) -> tuple[Tenant, ...]:
    """A tenant of its own whose events go to the receiver."""
    return (
        Tenant(
            f"t{secrets.token_hex(4)}",
            (hash_api_key(API_KEY),),
            webhook_url=receiver.url,
            webhook_secret=receiver.secret,
        ),
    )


def test_a_full_flow_is_told_in_order_and_signed(
    redis_url: str, sandbox: SandboxHandle, receiver: Receiver
) -> None:
    """Create, an answered call, a wrong code and the right one deliver created, delivery_updated
    (calling, answered) and approved, in that order, each verified by standardwebhooks."""
    phone = _number()
    # the phone rings a moment, so the call is recorded as placed before it ends (with calls ending at
    # once, the end's callback may come first, and then "calling" is rightly never a state)
    sandbox.config.ring_seconds = 0.3
    with (
        running_service(redis_url, sandbox.url, tenants=_hooked(receiver)) as hooked,
        hooked.client() as client,
    ):
        vid = create(client, phone)["id"]
        code = heard_code(sandbox, phone)
        sandbox.wait_until_ended([client.get(f"/otp/{vid}").json()["delivery"]["call_id"]])
        wait_until(
            lambda: client.get(f"/otp/{vid}").json()["delivery"]["status"] == "answered", 5, "answered"
        )
        assert client.post("/verify", json={"id": vid, "code": wrong_code(code)}).json()["valid"] is False
        assert client.post("/verify", json={"id": vid, "code": code}).json()["valid"] is True
        types = receiver.wait_for(4, vid)
        shown = client.get(f"/otp/{vid}").json()
    assert types == [
        "verification.created",
        "verification.delivery_updated",
        "verification.delivery_updated",
        "verification.approved",
    ]
    events = [event for event in receiver.events if event["data"]["id"] == vid]
    assert [event["data"]["delivery"]["status"] for event in events[1:3]] == ["calling", "answered"]
    assert events[-1]["data"]["attempts"] == 2
    assert receiver.bad_signatures == 0
    assert len(set(receiver.ids)) == len(receiver.ids)
    assert code not in str(receiver.events)
    assert all(event["data"].keys() == shown.keys() for event in events)  # what GET shows, nothing more


def _settle(service: ServiceHandle, done: Callable[[], bool], what: str, step: float = 5.0) -> None:
    """Move the service's clock on (retries are scheduled by it) until ``done``."""
    deadline = time.monotonic() + 15
    while not done():
        assert time.monotonic() < deadline, what
        service.clock.advance(step)
        time.sleep(0.1)


def test_a_failing_receiver_gets_everything_later_in_order(redis_url: str, sandbox: SandboxHandle) -> None:
    """A receiver answering 500 at first gets every event later, in order, each id stable across tries."""
    with (
        running_receiver(fail_first=3) as receiver,
        running_service(redis_url, sandbox.url, tenants=_hooked(receiver)) as service,
    ):
        with service.client() as client:
            vid = create(client, _number())["id"]
            # The call's report lands on its own time; canceled after it, the events' order is known.
            wait_until(
                lambda: client.get(f"/otp/{vid}").json()["delivery"]["status"] == "answered",
                10,
                "the call's report",
            )
            client.delete(f"/otp/{vid}")
        _settle(service, lambda: "verification.canceled" in receiver.types(vid), "every event delivered")
        with service.client() as client:
            metrics = client.get("/metrics").text
    for outcome in ("emitted", "retried", "delivered"):
        assert f'otp_webhook_events_total{{outcome="{outcome}"}}' in metrics
    assert "otp_webhook_delivery_seconds_bucket" in metrics
    types = receiver.types(vid)
    assert types[:2] == ["verification.created", "verification.delivery_updated"]
    assert set(types[2:-1]) <= {"verification.delivery_updated"}
    assert types[-1] == "verification.canceled"
    first_id = receiver.ids[0]
    tries_of_first = [headers["webhook-id"] for headers in receiver.attempts].count(first_id)
    assert tries_of_first == 4  # three 500s, then accepted: one id across its retries
    assert receiver.ids == sorted(set(receiver.ids), key=receiver.ids.index)  # each accepted once


def test_dead_letters_are_listed_and_sent_again(redis_url: str, sandbox: SandboxHandle) -> None:
    """Past OTP_WEBHOOK_RETRY_HOURS an event is dead-lettered; the CLI lists it and `retry` sends it."""
    with (
        running_receiver(fail_first=10**6) as receiver,
        running_service(
            redis_url, sandbox.url, tenants=_hooked(receiver), webhook_retry_hours=0.001
        ) as service,
    ):
        with service.client() as client:
            vid = create(client, _number())["id"]
        runner = CliRunner()
        env = {"OTP_REDIS_URL": redis_url}

        def dead() -> list[dict[str, Any]]:
            listed = runner.invoke(main, ["webhooks", "failed"], env=env)
            assert listed.exit_code == 0, listed.output
            lines = [json.loads(line) for line in listed.output.splitlines()]
            return [line for line in lines if line["verification_id"] == vid]

        _settle(service, lambda: len(dead()) >= 2, "the events dead-lettered")
        letters = dead()
        assert letters[0]["type"] == "verification.created"
        assert {letter["type"] for letter in letters[1:]} == {"verification.delivery_updated"}
        assert letters[0]["last_error"] == "HTTP 500"
        assert letters[0]["tries"] >= 1
        receiver.fail_first = 0
        for letter in letters:
            revived = runner.invoke(main, ["webhooks", "retry", letter["id"]], env=env)
            assert revived.exit_code == 0, revived.output
        types = receiver.wait_for(len(letters), vid)
        assert not dead()
    assert types == [letter["type"] for letter in letters]


def test_a_verification_left_alone_expires_once_across_two_workers(
    redis_url: str, sandbox: SandboxHandle, receiver: Receiver
) -> None:
    """Two workers sweeping one Redis store "expired" once and emit verification.expired once."""
    tenants = _hooked(receiver)
    with (
        running_service(redis_url, sandbox.url, tenants=tenants, reconcile_interval_seconds=0.1) as one,
        running_service(redis_url, sandbox.url, tenants=tenants, reconcile_interval_seconds=0.1) as two,
    ):
        with one.client() as client:
            vid = create(client, _number(), ttl_seconds=60)["id"]
        receiver.wait_for(2, vid)
        one.clock.advance(61)
        two.clock.advance(61)
        wait_until(lambda: "verification.expired" in receiver.types(vid), 10, "the expiry event")
        time.sleep(0.5)  # both workers sweep several times meanwhile
        with two.client() as client:
            assert client.get(f"/otp/{vid}").json()["status"] == "expired"
    assert receiver.types(vid).count("verification.expired") == 1
    assert receiver.types(vid)[-1] == "verification.expired"


def test_a_replica_without_the_tenants_webhook_leaves_its_events_to_one_with_it(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """An event claimed by a replica that knows no webhook for its tenant (a rollout) is sent later
    by one that does, never dropped."""

    def settled_tries() -> float:  # the outcomes an event claimed by the old replica can have
        return sum(
            REGISTRY.get_sample_value("otp_webhook_events_total", {"outcome": outcome}) or 0
            for outcome in ("retried", "dropped")
        )

    with running_receiver(fail_first=10**6) as receiver:
        new_tenants = _hooked(receiver)
        # the old list: this tenant without its webhook yet, another with one (so it dispatches)
        old_tenants = (
            replace(new_tenants[0], webhook_url=None, webhook_secret=None),
            replace(_hooked(receiver)[0], key_hashes=(hash_api_key("another-" + API_KEY),)),
        )
        with running_service(redis_url, sandbox.url, tenants=new_tenants) as new:
            with new.client() as client:
                vid = create(client, _number())["id"]
            wait_until(lambda: bool(receiver.attempts), 10, "a first try, refused by the receiver")
        with running_service(redis_url, sandbox.url, tenants=old_tenants) as old:
            before = settled_tries()
            _settle(old, lambda: settled_tries() > before, "the old replica claiming the event")
        receiver.fail_first = 0
        with running_service(redis_url, sandbox.url, tenants=new_tenants) as new:
            _settle(new, lambda: "verification.created" in receiver.types(vid), "the event sent")
