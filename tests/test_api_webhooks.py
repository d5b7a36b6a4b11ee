"""Delivery events: signed per Standard Webhooks, durable, in order, to a real receiver."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from otpservice.tenants import Tenant, hash_api_key
from tests.support.flows import create, heard_code, wrong_code
from tests.support.receiver import Receiver, running_receiver
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import API_KEY, ServiceHandle, running_service


def _number() -> str:
    return f"097{secrets.randbelow(10**7):07d}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as handle:
        yield handle


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


@pytest.fixture
def hooked(redis_url: str, sandbox: SandboxHandle, receiver: Receiver) -> Iterator[ServiceHandle]:
    with running_service(redis_url, sandbox.url, tenants=_hooked(receiver)) as service:
        yield service


def test_a_full_flow_is_told_in_order_and_signed(
    hooked: ServiceHandle, sandbox: SandboxHandle, receiver: Receiver
) -> None:
    """Create, an answered call, a wrong code and the right one deliver created, delivery_updated
    (calling, answered) and approved, in that order, each verified by standardwebhooks."""
    phone = _number()
    with hooked.client() as client:
        vid = create(client, phone)["id"]
        code = heard_code(sandbox, phone)
        sandbox.wait_until_ended([client.get(f"/otp/{vid}").json()["delivery"]["call_id"]])
        wait_until(
            lambda: client.get(f"/otp/{vid}").json()["delivery"]["status"] == "answered", 5, "answered"
        )
        assert client.post("/verify", json={"id": vid, "code": wrong_code(code)}).json()["valid"] is False
        assert client.post("/verify", json={"id": vid, "code": code}).json()["valid"] is True
    types = receiver.wait_for(4, vid)
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
    with hooked.client() as client:
        shown = client.get(f"/otp/{vid}").json()
    assert all(event["data"].keys() == shown.keys() for event in events)  # what GET shows, nothing more
