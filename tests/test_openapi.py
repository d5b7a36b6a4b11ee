"""openapi.yaml is the published contract: it must be exactly what the app generates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from otpservice.cli.service import openapi_yaml

CONTRACT = Path(__file__).resolve().parent.parent / "openapi.yaml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """openapi.yaml as data (read once: it is long)."""
    loaded: dict[str, Any] = yaml.safe_load(CONTRACT.read_text())
    return loaded


def test_checked_in_contract_matches_the_app() -> None:
    """The checked-in openapi.yaml equals the generated one (run `make openapi` after API changes)."""
    assert CONTRACT.read_text() == openapi_yaml(), "openapi.yaml is stale: run `make openapi`"


def test_contract_documents_every_endpoint_and_problem(spec: dict[str, Any]) -> None:
    """Every endpoint of the issue is in the contract, errors as problem+json, keys required."""
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


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        resolved: dict[str, Any] = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        return resolved
    return schema


def _documented_codes(spec: dict[str, Any], response: dict[str, Any]) -> set[str]:
    """The problem codes a response documents (each problem schema fixes its code)."""
    schema = response["content"]["application/problem+json"]["schema"]
    codes: set[str] = set()
    for choice in schema.get("oneOf", [schema]):
        code = _resolve(spec, choice)["properties"]["code"]
        codes |= {code["const"]} if "const" in code else set(code["enum"])
    return codes


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def test_every_refusal_names_its_codes(spec: dict[str, Any]) -> None:
    """Every error answer of an API operation is problem+json whose schema fixes the codes it may carry."""
    for path, method, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert _documented_codes(spec, response), (method, path, status)


def test_each_operation_documents_what_it_answers(spec: dict[str, Any]) -> None:
    """Refusals are documented where they happen: 422 validation_error on id paths, invalid_phone
    only on a start, invalid_code_format on a check, 429 budgets where a call is placed, and the
    API key's 401 with WWW-Authenticate."""
    paths = spec["paths"]

    def codes(path: str, method: str, status: str) -> set[str]:
        return _documented_codes(spec, paths[path][method]["responses"][status])

    for method in ("get", "delete"):
        assert codes("/otp/{verification_id}", method, "422") == {"validation_error"}
    assert "invalid_phone" in codes("/otp", "post", "422")
    assert "invalid_code_format" in codes("/verify", "post", "422")
    assert "invalid_phone" not in codes("/verify", "post", "422")
    assert "phone_rate_limited" in codes("/otp", "post", "429")
    assert "resend_too_soon" in codes("/otp/{verification_id}/resend", "post", "429")
    assert "429" not in paths["/verify"]["post"]["responses"]
    assert "400" not in paths["/otp/{verification_id}"]["get"]["responses"]  # no body, nothing to parse
    unauthorized = paths["/otp"]["post"]["responses"]["401"]
    assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True
    assert "Retry-After" in paths["/otp"]["post"]["responses"]["429"]["headers"]


def test_request_schemas_say_what_is_accepted(spec: dict[str, Any]) -> None:
    """Bodies refuse unknown fields, the phone's characters are a pattern, and metadata values are
    one list of types (a oneOf of integer and number would refuse 0)."""
    schemas = spec["components"]["schemas"]
    for name in ("CreateVerification", "ResendCode", "VerifyCode"):
        assert schemas[name]["additionalProperties"] is False, name
    create = schemas["CreateVerification"]["properties"]
    assert create["phone"]["pattern"]
    metadata = next(choice for choice in create["metadata"]["oneOf"] if choice["type"] == "object")
    assert metadata["maxProperties"] == 20
    assert set(metadata["additionalProperties"]["type"]) == {"string", "number", "boolean", "null"}
    assert "oneOf" not in schemas["VerificationView"]["properties"]["metadata"]["additionalProperties"]


def test_callbacks_are_in_the_contract(spec: dict[str, Any]) -> None:
    """Both callback URLs are documented, without an API key, the credential as a plain string."""
    paths = spec["paths"]
    with_credential = paths["/callbacks/autocall/{verification_id}/{send}/{credential}"]["post"]
    credential = next(p for p in with_credential["parameters"] if p["name"] == "credential")
    assert credential["schema"]["type"] == "string"
    assert "post" in paths["/callbacks/autocall/{verification_id}/{send}"]
    assert "security" not in with_credential
    assert _documented_codes(spec, with_credential["responses"]["401"]) == {"invalid_callback_credentials"}
