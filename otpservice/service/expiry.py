"""The expiry sweep: a pending verification whose time passed is stored as expired, once.

Reads already show such a verification as expired; storing it makes the change an event
(``verification.expired``) that reaches the tenant's webhook. Every worker sweeps; the script that
stores it decides atomically, so each verification expires once.
"""

from __future__ import annotations

import asyncio

import structlog

from otpservice.adapters.storage.keys import SHARDS
from otpservice.adapters.storage.store import VerificationStore
from otpservice.domain.clock import Clock
from otpservice.service import metrics

log = structlog.get_logger(__name__)

BATCH = 100


class ExpirySweep:
    def __init__(self, store: VerificationStore, clock: Clock, interval_seconds: float):
        self._store = store
        self._clock = clock
        self._interval = interval_seconds

    async def sweep_round(self) -> float:
        """Expire what is due in every shard; answers how long to wait before the next round."""
        full = await asyncio.gather(*(self._sweep_shard(shard) for shard in range(SHARDS)))
        return 0.0 if any(full) else self._interval

    async def _sweep_shard(self, shard: int) -> bool:
        now = self._clock.now()
        due = await self._store.due_to_expire(shard, now, BATCH)
        for verification_id in due:
            if await self._store.expire(verification_id, now):
                metrics.EXPIRED.inc()
                log.info("verification.expired", verification_id=verification_id)
        return len(due) == BATCH
