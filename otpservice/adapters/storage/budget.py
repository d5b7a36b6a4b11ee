"""The per-number call budget (toll-fraud protection): calls to one number per fixed window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain.clock import to_millis


@dataclass(frozen=True, slots=True)
class BudgetTicket:
    """One call counted against a number's budget; hand it back if the call surely never left."""

    key: str
    call: str


class PhoneBudget:
    """Counts calls per number and window; every call is named, so a retry counts it once."""

    def __init__(self, storage: Storage):
        self._storage = storage

    async def take(
        self, phone: str, call: str, now: datetime, limit: int, window_seconds: int
    ) -> BudgetTicket | int:
        """Count ``call`` to ``phone``: its ticket when allowed, else milliseconds until the window ends."""
        window_ms = window_seconds * 1000
        window = to_millis(now) // window_ms
        key = keys.phone_calls_key(phone, window)
        allowed = await self._storage.run("take_phone_call", [key], [limit, call, window_ms])
        if int(allowed):
            return BudgetTicket(key, call)
        return max(1, (window + 1) * window_ms - to_millis(now))

    async def give_back(self, ticket: BudgetTicket) -> None:
        """The call never left: it no longer counts."""
        await self._storage.call(lambda: self._storage.client.srem(ticket.key, ticket.call))
