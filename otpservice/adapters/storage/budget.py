"""The per-number call budget (toll-fraud protection): calls to one number per fixed window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain.clock import to_millis


@dataclass(frozen=True, slots=True)
class BudgetTicket:
    """One call to one number in one window; taken from the budget, or handed back."""

    phone: str
    call: str
    window: int
    window_ms: int

    @property
    def keys(self) -> list[str]:
        return [
            keys.phone_calls_key(self.phone, self.window),
            keys.phone_calls_given_back_key(self.phone, self.window),
        ]


class PhoneBudget:
    """Counts calls per number and window; every call is named, so a retry counts it once."""

    def __init__(self, storage: Storage):
        self._storage = storage

    @staticmethod
    def ticket(phone: str, call: str, now: datetime, window_seconds: int) -> BudgetTicket:
        """The ticket naming ``call`` to ``phone`` in the window ``now`` falls in."""
        window_ms = window_seconds * 1000
        return BudgetTicket(phone, call, to_millis(now) // window_ms, window_ms)

    async def take(self, ticket: BudgetTicket, now: datetime, limit: int) -> int | None:
        """Count the ticket's call: None when allowed, else milliseconds until its window ends."""
        allowed = await self._storage.run(
            "take_phone_call", ticket.keys, [limit, ticket.call, ticket.window_ms]
        )
        if int(allowed):
            return None
        return max(1, (ticket.window + 1) * ticket.window_ms - to_millis(now))

    async def give_back(self, ticket: BudgetTicket) -> None:
        """The call never left: it no longer counts, even if its count lands after this."""
        await self._storage.run("give_back_phone_call", ticket.keys, [ticket.call, ticket.window_ms])
