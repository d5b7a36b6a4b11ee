"""Liveness and readiness probes (no API key)."""

from __future__ import annotations

from litestar import get

from otpservice.adapters.storage.health import ping
from otpservice.domain.errors import StorageUnavailable
from otpservice.http.dependencies import StorageDependency
from otpservice.http.problems import problem
from otpservice.http.schemas import Health, problem_responses


@get("/healthz", tags=["health"], summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@get("/readyz", tags=["health"], summary="Redis is reachable", responses=problem_responses(503))
async def readyz(storage: StorageDependency) -> Health:
    try:
        await ping(storage)
    except StorageUnavailable as exc:
        raise problem(503, "not_ready", "Not ready", "Redis is unreachable", {"Retry-After": "2"}) from exc
    return Health(status="ready")
