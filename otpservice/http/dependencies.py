"""What handlers may ask for by name; provided from the lifespan-managed state."""

from __future__ import annotations

from typing import TypeAlias

from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from redis.asyncio import Redis

from otpservice.service.verifications import VerificationService

Verifications: TypeAlias = NamedDependency[VerificationService]
RedisClient: TypeAlias = NamedDependency[Redis]


def _verifications(state: State) -> VerificationService:
    service: VerificationService = state.verifications
    return service


def _redis(state: State) -> Redis:
    client: Redis = state.redis
    return client


DEPENDENCIES = {
    "verifications": Provide(_verifications, sync_to_thread=False),
    "redis": Provide(_redis, sync_to_thread=False),
}
