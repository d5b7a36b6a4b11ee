"""The API contract as a set of test modules, to run again on another Redis topology.

A topology module takes these tests into its own namespace and overrides the ``redis_url``
fixture; every service those tests start then runs on that topology.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tests import (
    test_api_callbacks,
    test_api_lifecycle,
    test_api_phone_budget,
    test_api_provider_faults,
    test_api_reconcile,
    test_api_verifications,
    test_api_verify,
)

CONTRACT_MODULES: tuple[ModuleType, ...] = (
    test_api_callbacks,
    test_api_lifecycle,
    test_api_phone_budget,
    test_api_provider_faults,
    test_api_reconcile,
    test_api_verifications,
    test_api_verify,
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
