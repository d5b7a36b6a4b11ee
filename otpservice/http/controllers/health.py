"""Liveness and readiness probes (no API key)."""

from __future__ import annotations

from litestar import get
from redis.exceptions import RedisError

from otpservice.http.dependencies import RedisClient
from otpservice.http.problems import problem
from otpservice.http.schemas import Health, problem_responses


@get("/healthz", tags=["health"], summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@get("/readyz", tags=["health"], summary="Redis is reachable", responses=problem_responses(503))
async def readyz(redis: RedisClient) -> Health:
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        raise problem(503, "not_ready", "Not ready", "Redis is unreachable") from exc
    return Health(status="ready")
