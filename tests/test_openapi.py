"""openapi.yaml is the published contract: it must be exactly what the app generates."""

from __future__ import annotations

from pathlib import Path

import yaml

from otpservice.cli.service import openapi_yaml

CONTRACT = Path(__file__).resolve().parent.parent / "openapi.yaml"


def test_checked_in_contract_matches_the_app() -> None:
    """The checked-in openapi.yaml equals the generated one (run `make openapi` after API changes)."""
    assert CONTRACT.read_text() == openapi_yaml(), "openapi.yaml is stale: run `make openapi`"


def test_contract_documents_every_endpoint_and_problem() -> None:
    """Every endpoint of the issue is in the contract, errors as problem+json, keys required."""
    spec = yaml.safe_load(CONTRACT.read_text())
    paths = spec["paths"]
    for path, method in [
        ("/otp", "post"),
        ("/otp/{verification_id}", "get"),
        ("/otp/{verification_id}", "delete"),
        ("/otp/{verification_id}/resend", "post"),
        ("/verify", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ]:
        assert method in paths[path], (path, method)
    create = paths["/otp"]["post"]
    assert create["security"] == [{"apiKey": []}]
    assert "application/problem+json" in create["responses"]["422"]["content"]
    assert "security" not in paths["/healthz"]["get"]
