"""Call budgets beyond the number's own (toll-fraud protection): each one sliding-window log in Redis.

A budget is a subject (a client address, a number range, a tenant's day, everything) with a limit
list. Every call is named, so a retried take counts it once and a call that never left can be given
back, in either order. The number's own budget is not here: it is checked in the same script that
creates the verification (see ``lua/create.lua``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain import limits as limit_lists
from otpservice.domain.limits import Limits

BudgetKind = Literal["client", "prefix", "tenant_day", "global"]


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget a call is charged to. ``resets_at_ms``: a fixed window's end (the tenant's day)."""

    kind: BudgetKind
    subject: str
    limits: Limits
    resets_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """The budget that refuses a call longest, and how long until it would allow one (ms)."""

    budget: Budget
    wait_ms: int


@dataclass(frozen=True, slots=True)
class Charges:
    """The budgets one named call was counted against; given back together if it never left."""

    call: str
    at_ms: int
    budgets: tuple[Budget, ...] = ()


def refusal_of(budgets: Sequence[Budget], waits: Sequence[int], now_ms: int) -> Refusal | None:
    """Of the budgets that refused (a wait above 0 ms), the one that refuses longest; None when
    none did. A fixed window's wait is until it resets, which will surely be enough."""
    refused = [
        (budget, budget.resets_at_ms - now_ms if budget.resets_at_ms is not None else wait)
        for budget, wait in zip(budgets, waits, strict=True)
        if wait > 0
    ]
    if not refused:
        return None
    budget, wait = max(refused, key=lambda refusal: refusal[1])
    return Refusal(budget, max(1, wait))


class CallBudgets:
    """Takes one call from several budgets at once (one round trip each, in parallel)."""

    def __init__(self, storage: Storage):
        self._storage = storage

    async def take(self, call: str, budgets: Sequence[Budget], now_ms: int) -> Charges | Refusal:
        """Count ``call`` in every budget; when any refuses, give back the others and name the one
        that refuses longest (its wait is the Retry-After that will surely be enough)."""
        waits = await asyncio.gather(*(self._take(call, budget, now_ms) for budget in budgets))
        refusal = refusal_of(budgets, waits, now_ms)
        if refusal is None:
            return Charges(call, now_ms, tuple(budgets))
        taken = tuple(budget for budget, wait in zip(budgets, waits, strict=True) if wait == 0)
        await self.give_back(Charges(call, now_ms, taken))
        return refusal

    async def _take(self, call: str, budget: Budget, now_ms: int) -> int:
        flat = limit_lists.flatten(budget.limits)
        wait = await self._storage.run(
            "take_calls", list(keys.budget_keys(budget.subject)), [now_ms, call, len(flat), *flat]
        )
        return int(wait)

    async def give_back(self, charges: Charges) -> None:
        """The call never left: it no longer counts anywhere, even if a count lands after this."""
        await asyncio.gather(
            *(
                self._storage.run(
                    "give_back_calls",
                    list(keys.budget_keys(budget.subject)),
                    [charges.at_ms, charges.call, limit_lists.longest_window_ms(budget.limits)],
                )
                for budget in charges.budgets
            )
        )
