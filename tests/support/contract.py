"""The API contract as a set of test modules, to run again on another Redis topology.

A topology module takes these tests into its own namespace and overrides the ``redis_url``
fixture; every service those tests start then runs on that topology.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

CONTRACT_MODULES: tuple[ModuleType, ...] = tuple(
    importlib.import_module(f"tests.test_api_{name}")
    for name in (
        "callbacks",
        "failure_lock",
        "idempotency",
        "lifecycle",
        "one_pending",
        "budgets",
        "provider_faults",
        "reconcile",
        "verifications",
        "verify",
        "webhooks",
    )
)


def contract_tests() -> dict[str, Any]:
    """Every test function of the contract modules, by name (names are unique across them)."""
    tests: dict[str, Any] = {}
    for module in CONTRACT_MODULES:
        for name, value in vars(module).items():
            if name.startswith("test_") and callable(value):
                assert name not in tests, f"{name} is defined twice in the contract"
                tests[name] = value
    return tests
