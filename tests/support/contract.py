"""The API contract as a set of test modules, to run again on another Redis topology.

A topology module takes these tests into its own namespace and overrides the ``redis_url``
fixture; every service those tests start then runs on that topology.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def _modules(*names: str) -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(f"tests.test_api_{name}") for name in names)


# The whole flow: what any topology must serve unchanged (all of it runs on Cluster).
CORE_MODULES = _modules("callbacks", "lifecycle", "provider_faults", "reconcile", "verifications", "verify")
# Through Sentinel every command goes to one discovered master, as on one server: the state machine,
# the races and reconciliation prove the connection; request parsing and provider faults do not
# touch storage differently, and rerunning them there cost the suite's time budget.
SENTINEL_MODULES = _modules("lifecycle", "reconcile", "verify")
# Scripts that reach a number's keys and a shard's outbox beside the record: Cluster proves they
# stay in one slot. A start's budgets are taken by the create script on one server but one slot at a
# time, before it, in a Cluster: both ways run the budget tests. (Sentinel adds nothing here beyond
# one master, so it runs the core only. The idempotency scripts touch one key tag by construction,
# so they run on one server.)
SLOT_MODULES = _modules("budgets", "failure_lock", "one_pending", "webhooks")


def contract_tests(modules: tuple[ModuleType, ...] = CORE_MODULES + SLOT_MODULES) -> dict[str, Any]:
    """Every test function of the modules, by name (names are unique across them)."""
    tests: dict[str, Any] = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("test_") and callable(value):
                assert name not in tests, f"{name} is defined twice in the contract"
                tests[name] = value
    return tests
