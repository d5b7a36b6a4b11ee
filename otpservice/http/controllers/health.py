"""Liveness and readiness probes (no API key)."""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from otpservice.adapters.storage.health import ping
from otpservice.domain.errors import StorageUnavailable
from otpservice.http.dependencies import StorageDependency
from otpservice.http.problems import problem
from otpservice.http.schemas import NOT_READY, DocumentedOperation, Health, problem_answers
from otpservice.service.provider_health import ProviderProbe

ProviderDependency: TypeAlias = NamedDependency[ProviderProbe]


def _provider(state: State) -> ProviderProbe:
    probe: ProviderProbe = state.provider
    return probe


class DependencyStates(msgspec.Struct):
    """Each dependency's state as this worker sees it."""

    redis: Literal["ok", "unreachable"]
    provider: Literal["ok", "unchecked", "refused", "unreachable", "failing"]


class Readiness(msgspec.Struct):
    status: Literal["ready"]
    checks: DependencyStates


@get("/healthz", tags=["health"], summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@get(
    "/readyz",
    tags=["health"],
    summary="Redis answers and the voice provider accepts the secret key",
    description=(
        "503 `not_ready` while Redis does not answer, the provider refuses the secret key or cannot be "
        "reached, or the first provider check has not finished; `checks` names each dependency's state."
    ),
    responses=problem_answers(NOT_READY),
    operation_class=DocumentedOperation,
    dependencies={"provider": Provide(_provider, sync_to_thread=False)},
)
async def readyz(storage: StorageDependency, provider: ProviderDependency) -> Readiness:
    try:
        await ping(storage)
        redis: Literal["ok", "unreachable"] = "ok"
    except StorageUnavailable:
        redis = "unreachable"
    checks = DependencyStates(redis=redis, provider=provider.state().value)
    if redis != "ok" or checks.provider != "ok":
        failing = [name for name, state in msgspec.structs.asdict(checks).items() if state != "ok"]
        raise problem(
            503,
            "not_ready",
            "Not ready",
            f"not ready: {', '.join(f'{name} {getattr(checks, name)}' for name in failing)}",
            {"Retry-After": "2"},
            checks=msgspec.structs.asdict(checks),
        )
    return Readiness(status="ready", checks=checks)
