"""The contract fuzzed against the app: schemathesis sends what openapi.yaml allows (and what it
does not) to a real service, on real Redis, calling the sandbox, and runs every check on each answer.

The run is schemathesis' own engine (what ``schemathesis run`` drives), with every phase: the
contract's examples, its coverage cases (boundaries, each constraint broken, missing headers,
unexpected methods), fuzzing, and stateful chains along the links it infers (start, read, verify,
resend, cancel). The schema is loaded inside the test: loaded at import, as ``schema.parametrize()``
needs, it cost every pytest worker about 3 s of collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import BaseSchema, GenerationMode, HookContext, Response
from schemathesis import Case as GenericCase
from schemathesis.engine import Status, events

from otpservice.domain.callback_auth import CallbackSigner
from tests.support.sandbox import running_sandbox
from tests.support.service import API_KEY, PEPPER, ServiceHandle, running_service

CONTRACT = Path(__file__).resolve().parent.parent / "openapi.yaml"
Case = GenericCase[Any]  # the operation type is schemathesis' business
_CALLBACK_WITH_CREDENTIAL = "POST /callbacks/autocall/{verification_id}/{send}/{credential}"
# Where valid input may still be refused by a rule no schema can state, as each 422 there documents:
# a number phonenumbers refuses, a code of another length than the verification's, an
# Idempotency-Key already used for another body, a callback that reports no call.
_REFUSED_BY_RULE = [
    "POST /otp",
    "POST /otp/{verification_id}/resend",
    "POST /verify",
    "POST /callbacks/autocall/{verification_id}/{send}",
    _CALLBACK_WITH_CREDENTIAL,
]
_ACCEPTED_OR_REFUSED_BY_RULE = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
# Codes that say a request broke the schema: a schema-valid request must never get one.
_SCHEMA_REFUSALS = ("validation_error", "malformed_body")


@pytest.fixture
def fuzzed_service(redis_url: str) -> Iterator[ServiceHandle]:
    """A service of its own: the fuzzer's verifications are its own tenant's."""
    with running_sandbox() as sandbox, running_service(redis_url, sandbox.url) as service:
        yield service


def _contract(service: ServiceHandle, refused_valid_input: list[str]) -> BaseSchema:
    """openapi.yaml aimed at ``service`` with its API key; a schema-valid request refused as
    breaking the schema is noted in ``refused_valid_input``."""
    contract = schemathesis.openapi.from_path(
        CONTRACT,
        config=schemathesis.Config.from_dict(
            {
                "base-url": service.url,
                "headers": {"Authorization": f"Bearer {API_KEY}"},
                "seed": 20261126,
                "workers": 1,
                "generation": {"max-examples": 5, "deterministic": True},
                "phases": {"stateful": {"max-steps": 4}},
                "operations": [
                    {
                        "include-name": _REFUSED_BY_RULE,
                        "checks": {
                            "positive_data_acceptance": {"expected-statuses": _ACCEPTED_OR_REFUSED_BY_RULE}
                        },
                    },
                    {
                        # DELETE cancels: the verification stays readable, as canceled (README), so
                        # a read after it is no use after free
                        "include-name": "GET /otp/{verification_id}",
                        "checks": {"use_after_free": {"enabled": False}},
                    },
                ],
            }
        ),
    )

    @contract.hook
    def map_case(context: HookContext, case: Case) -> Case:
        """A schema-valid callback carries the credential the service gives the provider for its
        path, so the fuzzer gets past authentication to the body and the record."""
        parameters = case.path_parameters or {}
        meta = case.meta
        if (
            case.operation.label == _CALLBACK_WITH_CREDENTIAL
            and meta is not None
            and meta.generation.mode is GenerationMode.POSITIVE
            and isinstance(parameters.get("verification_id"), str)
            and isinstance(parameters.get("send"), int)
        ):
            parameters["credential"] = CallbackSigner(PEPPER).credential(
                parameters["verification_id"], parameters["send"]
            )
        return case

    @contract.hook
    def after_call(context: HookContext, case: Case, response: Response) -> None:
        meta = case.meta
        if meta is None or meta.generation.mode is not GenerationMode.POSITIVE:
            return
        if response.status_code in (400, 422) and response.json().get("code") in _SCHEMA_REFUSALS:
            refused_valid_input.append(f"{case.operation.label}: {response.text}")

    return contract


@pytest.mark.long
def test_the_app_answers_as_its_contract_says(fuzzed_service: ServiceHandle) -> None:
    """Every operation and chain of operations, given schema-valid and schema-invalid requests,
    answers only documented statuses, headers, content types and bodies, never a server error;
    refuses what the contract refuses and valid input only by a documented rule; created
    verifications can be read; requests without the API key are refused."""
    refused_valid_input: list[str] = []
    contract = _contract(fuzzed_service, refused_valid_input)
    failures: list[str] = []
    scenarios = 0
    for event in schemathesis.engine.from_schema(contract).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            failures += _failures(event)
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    assert scenarios, "schemathesis ran nothing"
    assert not failures, "\n\n".join(failures)
    assert not refused_valid_input, "\n".join(refused_valid_input)


def _failures(scenario: events.ScenarioFinished) -> list[str]:
    """Each failed check of a scenario, with the curl command that reproduces it."""
    return [
        f"{scenario.label} — {check.name}: {check.failure_info.failure.title}\n"
        f"{check.failure_info.failure.message}\n{check.failure_info.code_sample}"
        for checks in scenario.recorder.checks.values()
        for check in checks
        if check.status is Status.FAILURE and check.failure_info is not None
    ]


def test_options_lists_every_method_of_a_path(service: ServiceHandle) -> None:
    """OPTIONS names every method a path serves, also where GET and DELETE are separate handlers."""
    with service.client() as client:
        for path, methods in [
            ("/otp/vf_0", "DELETE, GET, HEAD, OPTIONS"),
            ("/otp", "OPTIONS, POST"),
            ("/otp/vf_0/resend", "OPTIONS, POST"),
        ]:
            response = client.options(path)
            assert response.status_code == 204, path
            assert response.headers["allow"] == methods, path
