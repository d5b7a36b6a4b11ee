"""Tenants: a verification belongs to the tenant whose key created it, and only that tenant sees it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from otpservice.tenants import Tenant, hash_api_key
from tests.support.flows import assert_problem, create, heard_code
from tests.support.provider import RecordedRequests
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle, running_service

SHOP_KEY = "shop-key-" + secrets.token_hex(8)
SHOP_ROTATED_KEY = "shop-key-next-" + secrets.token_hex(8)
BANK_KEY = "bank-key-" + secrets.token_hex(8)


@pytest.fixture
def provider() -> RecordedRequests:
    return RecordedRequests()


@pytest.fixture
def two_tenants(
    redis_url: str, sandbox: SandboxHandle, provider: RecordedRequests
) -> Iterator[ServiceHandle]:
    """One service with two tenants; the bank overrides code length, attempts and caller number."""
    tenants = (
        Tenant("shop", (hash_api_key(SHOP_KEY), hash_api_key(SHOP_ROTATED_KEY))),
        Tenant("bank", (hash_api_key(BANK_KEY),), code_length=8, max_attempts=2, caller="02873000000"),
    )
    with running_service(redis_url, sandbox.url, tenants=tenants, provider_transport=provider) as service:
        yield service


def test_another_tenants_verification_is_not_found_on_every_route(two_tenants: ServiceHandle) -> None:
    """With another tenant's key, GET, verify, resend and cancel answer 404 not_found and change nothing."""
    with two_tenants.client(SHOP_KEY) as shop, two_tenants.client(BANK_KEY) as bank:
        vid = create(shop, "0912340001")["id"]
        # The call's own report lands on its own time: wait for it, so that "before" is final.
        wait_until(
            lambda: shop.get(f"/otp/{vid}").json()["delivery"]["status"] == "answered",
            10,
            "the call's report",
        )
        before = shop.get(f"/otp/{vid}").json()
        two_tenants.clock.advance(30)
        never = "vf_" + "0" * 32
        for target in (vid, never):
            assert_problem(bank.get(f"/otp/{target}"), 404, "not_found")
            assert_problem(bank.post("/verify", json={"id": target, "code": "123456"}), 404, "not_found")
            assert_problem(bank.post(f"/otp/{target}/resend"), 404, "not_found")
            assert_problem(bank.delete(f"/otp/{target}"), 404, "not_found")
        foreign = bank.get(f"/otp/{vid}").json()
        missing = bank.get(f"/otp/{never}").json()
        assert foreign == missing  # exactly as for an id that never existed
        after = shop.get(f"/otp/{vid}").json()
    assert after == before


def test_each_tenant_has_its_own_pending_verification(two_tenants: ServiceHandle) -> None:
    """Two tenants starting for one number each get their own verification."""
    with two_tenants.client(SHOP_KEY) as shop, two_tenants.client(BANK_KEY) as bank:
        ours = create(shop, "0912340002")
        theirs = create(bank, "0912340002")
    assert ours["id"] != theirs["id"]


def test_rotated_keys_reach_the_same_verifications(two_tenants: ServiceHandle) -> None:
    """Both keys of a tenant (old and new, during rotation) see the same verifications."""
    with two_tenants.client(SHOP_KEY) as old, two_tenants.client(SHOP_ROTATED_KEY) as new:
        vid = create(old, "0912340003")["id"]
        assert new.get(f"/otp/{vid}").status_code == 200


def test_tenant_overrides_apply(
    two_tenants: ServiceHandle, sandbox: SandboxHandle, provider: RecordedRequests
) -> None:
    """A tenant's code length, attempt limit and caller number replace the global settings."""
    with two_tenants.client(BANK_KEY) as bank, two_tenants.client(SHOP_KEY) as shop:
        verification = create(bank, "0912340004")
        assert (verification["code_length"], verification["max_attempts"]) == (8, 2)
        assert len(heard_code(sandbox, "0912340004")) == 8
        create(shop, "0912340014")
    callers = [body["caller"] for _, body in provider.placed]
    assert callers == ["02873000000", two_tenants.settings.autocall.caller]


def test_logs_and_metrics_name_tenants_never_keys(two_tenants: ServiceHandle) -> None:
    """Tenant names label logs and metrics; no API key appears in either."""
    with two_tenants.client(SHOP_KEY) as shop:
        create(shop, "0912340005")
        metrics = shop.get("/metrics").text
    logs = two_tenants.logs.getvalue()
    assert 'tenant="shop"' in metrics
    assert any(json.loads(line).get("tenant") == "shop" for line in logs.splitlines() if line.startswith("{"))
    for key in (SHOP_KEY, SHOP_ROTATED_KEY, BANK_KEY):
        assert key not in metrics
        assert key not in logs


def test_an_unknown_key_is_refused(two_tenants: ServiceHandle) -> None:
    """A key no tenant holds is 401, like a missing one."""
    with two_tenants.client("not-a-key-" + secrets.token_hex(8)) as stranger:
        assert_problem(stranger.post("/otp", json={"phone": "0912340006"}), 401, "unauthorized")


def test_idempotency_keys_belong_to_one_tenant(two_tenants: ServiceHandle, sandbox: SandboxHandle) -> None:
    """The same Idempotency-Key used by two tenants names two requests, each answered on its own."""
    key = {"Idempotency-Key": "order-42"}
    with two_tenants.client(SHOP_KEY) as shop, two_tenants.client(BANK_KEY) as bank:
        ours = shop.post("/otp", json={"phone": "0912340007"}, headers=key)
        theirs = bank.post("/otp", json={"phone": "0912340007"}, headers=key)
    assert (ours.status_code, theirs.status_code) == (201, 201)
    assert ours.json()["id"] != theirs.json()["id"]
    assert len(sandbox.calls("0912340007")) == 2
