"""The schedule of calls to look at again, one sorted set per shard (see ``keys``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.records import text
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain.clock import to_millis


@dataclass(frozen=True, slots=True)
class ScheduledCall:
    """One call of one verification whose outcome (or placement) is not settled yet."""

    verification_id: str
    send_seq: int


class CallSchedule:
    """When to ask about each open call; leased to one worker at a time."""

    def __init__(self, storage: Storage):
        self._storage = storage

    async def claim_due(
        self, shard: int, now: datetime, limit: int, lease_until: datetime
    ) -> list[ScheduledCall]:
        """Due calls of one shard, leased to the caller until ``lease_until``.

        A lease rather than a removal: if this process dies mid-way, the calls come due again.
        """
        raw = await self._storage.run(
            "claim_due_calls",
            [keys.call_schedule_key(shard)],
            [to_millis(now), limit, to_millis(lease_until)],
        )
        return [ScheduledCall(*keys.parse_scheduled_call(text(member))) for member in raw]

    async def reschedule(self, call: ScheduledCall, at: datetime) -> None:
        """Ask again at ``at`` (only if the call is still on the schedule)."""
        key = keys.schedule_key_for(call.verification_id)
        member = keys.scheduled_call(call.verification_id, call.send_seq)
        await self._storage.call(
            lambda: self._storage.client.zadd(key, {member: to_millis(at)}, xx=True), "reschedule"
        )

    async def forget(self, call: ScheduledCall) -> None:
        key = keys.schedule_key_for(call.verification_id)
        member = keys.scheduled_call(call.verification_id, call.send_seq)
        await self._storage.call(lambda: self._storage.client.zrem(key, member), "forget")
