"""Events waiting to be delivered: the shards' outboxes, their delivery schedules and dead letters.

Events are written by the verification scripts themselves (``emit`` in ``lua/_prelude.lua``), in the
same step as the change they report. Here they are leased to a worker in order per verification,
settled after each attempt, and kept aside when their retry window ends.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.records import text, to_verification
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain.clock import from_millis, to_millis
from otpservice.domain.verification import Verification

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One event: what happened to which verification, and the verification as it was then."""

    shard: int
    key: str  # <verification id>:<n>, the n-th event of that verification
    type: str
    at: datetime  # when the change was recorded
    window_start: datetime  # when its retry window began (its recording, or its revival)
    verification: Verification
    tries: int
    lease: str = ""  # the name of the lease this worker holds it under
    first_lease: bool = False  # no worker held it before (it is being sent for the first time)

    @property
    def webhook_id(self) -> str:
        """Unique per event and stable across its retries (the Standard Webhooks ``webhook-id``)."""
        return "evt_" + self.key.replace(":", "_")

    @property
    def tenant(self) -> str:
        return self.verification.tenant


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event whose retry window ended undelivered."""

    event: Event
    last_error: str
    died_at: datetime


def _event(
    shard: int, key: str, payload: str, tries: int, lease: str = "", *, first_lease: bool = False
) -> Event:
    body: dict[str, Any] = json.loads(payload)
    verification_id = key.rpartition(":")[0]
    at = from_millis(int(body["at"]))
    revived = body.get("revived")
    return Event(
        shard=shard,
        key=key,
        type=body["type"],
        at=at,
        window_start=from_millis(int(revived)) if revived else at,
        verification=to_verification(verification_id, {k: str(v) for k, v in body["fields"].items()}),
        tries=tries,
        lease=lease,
        first_lease=first_lease,
    )


class EventOutbox:
    def __init__(self, storage: Storage):
        self._storage = storage

    async def claim(self, shard: int, now: datetime, most: int, lease_until: datetime) -> list[Event]:
        """Lease up to ``most`` due events of a shard (in order per verification)."""
        schedule, outbox, *_ = keys.outbox_keys(shard)
        lease = secrets.token_hex(8)
        reply = await self._storage.run(
            "claim_events", [schedule, outbox], [to_millis(now), most, to_millis(lease_until), lease]
        )
        words = [text(word) for word in reply]
        events = []
        for i in range(0, len(words), 4):
            key, payload, tries, first = words[i], words[i + 1], int(words[i + 2]), words[i + 3] == "1"
            try:
                events.append(_event(shard, key, payload, tries, lease, first_lease=first))
            except (ValueError, KeyError, TypeError) as exc:
                # one unreadable event must not hold up the others: set it aside for operators
                await self._storage.run(
                    "event_settled",
                    list(keys.outbox_keys(shard)),
                    [key, to_millis(now), "dead", "", tries, f"unreadable: {type(exc).__name__}", lease],
                )
        return events

    async def settle(
        self,
        event: Event,
        now: datetime,
        outcome: Literal["delivered", "retry", "dead"],
        *,
        retry_at: datetime | None = None,
        tries: int = 0,
        error: str = "",
    ) -> None:
        """Record one attempt's outcome; a delivered or dead event lets its successor go."""
        await self._storage.run(
            "event_settled",
            list(keys.outbox_keys(event.shard)),
            [
                event.key,
                to_millis(now),
                outcome,
                to_millis(retry_at) if retry_at else "",
                tries,
                error[:500],
                event.lease,
            ],
        )

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead-lettered event, oldest death first (then in the order they were recorded)."""

        async def of_shard(shard: int) -> list[DeadLetter]:
            dead = keys.outbox_keys(shard)[2]
            raw = await self._storage.call(lambda: self._storage.client.hgetall(dead), "dead_letters")
            fields = {text(k): text(v) for k, v in raw.items()}
            letters = []
            for key, payload in fields.items():
                if "|" in key:
                    continue
                try:
                    event = _event(shard, key, payload, int(fields.get(key + "|t", "0")))
                except (ValueError, KeyError, TypeError) as exc:
                    # one this version cannot read (written by a newer one, say) must not hide the rest
                    log.warning(
                        "webhook.dead_letter_unreadable", event_id=key, shard=shard, error=type(exc).__name__
                    )
                    continue
                letters.append(
                    DeadLetter(
                        event, fields.get(key + "|e", ""), from_millis(int(fields.get(key + "|at", "0")))
                    )
                )
            return letters

        shards = await asyncio.gather(*(of_shard(shard) for shard in range(keys.SHARDS)))
        return sorted(
            (letter for letters in shards for letter in letters),
            key=lambda letter: (letter.died_at, letter.event.at, int(letter.event.key.rpartition(":")[2])),
        )

    async def revive(self, now: datetime, webhook_id: str | None = None) -> list[str]:
        """Send dead-lettered events again (one by its webhook-id, or all); answers their webhook-ids."""
        if webhook_id is not None:
            key = _key_of(webhook_id)
            shards = [keys.shard_of(key.rpartition(":")[0])]
        else:
            key, shards = "", list(range(keys.SHARDS))
        revived = await asyncio.gather(
            *(
                self._storage.run("event_revive", list(keys.outbox_keys(shard)), [to_millis(now), key])
                for shard in shards
            )
        )
        return ["evt_" + text(event).replace(":", "_") for events in revived for event in events]


def _key_of(webhook_id: str) -> str:
    """The outbox key of a webhook-id: evt_<verification id>_<n> -> <verification id>:<n>."""
    verification_id, _, n = webhook_id.removeprefix("evt_").rpartition("_")
    return f"{verification_id}:{n}"
