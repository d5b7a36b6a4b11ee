"""Delivering events to tenants' webhooks: signed per Standard Webhooks, at least once, in order.

Events are recorded by the storage scripts in the same step as the change they report (see
``adapters/storage/outbox.py``). Every worker runs this dispatcher: it leases due events (in order
per verification; a worker that dies holding one loses nothing, the lease ends and another worker
takes it), POSTs each to its tenant's URL, and settles the attempt: delivered on a 2xx, else retried
with exponential backoff and jitter until ``OTP_WEBHOOK_RETRY_HOURS`` after the event, then
dead-lettered for operators (``otpservice webhooks failed|retry``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import structlog
from standardwebhooks import Webhook

from otpservice.adapters.storage.keys import SHARDS
from otpservice.adapters.storage.outbox import Event, EventOutbox
from otpservice.domain.clock import Clock
from otpservice.service import metrics

log = structlog.get_logger(__name__)

BATCH = 50
CONCURRENCY = 16
POLL_SECONDS = 1.0  # for retries and ended leases: every change wakes the dispatcher at once
RETRY_FIRST_SECONDS = 1.0
RETRY_LONGEST_SECONDS = 3600.0


def lease_seconds(receiver_timeout_seconds: float) -> float:
    """Longer than one delivery can take (connect and answer, then settling), so a lease only ends
    when its worker died; another worker then takes the event over (25 s with the defaults)."""
    return 2 * receiver_timeout_seconds + 5


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A tenant's receiver and the Standard Webhooks signer of its secret."""

    url: str
    signer: Webhook

    @classmethod
    def of(cls, url: str, secret: str) -> Endpoint:
        return cls(url, Webhook(secret))


class WebhookDispatcher:
    def __init__(
        self,
        *,
        outbox: EventOutbox,
        http: httpx.AsyncClient,
        clock: Clock,
        endpoints: Mapping[str, Endpoint],
        render: Callable[[Event], bytes],
        retry_hours: float,
        lease_seconds: float,
        jitter: Callable[[], float] = random.random,
    ):
        self._outbox = outbox
        self._http = http
        self._clock = clock
        self._endpoints = endpoints
        self._render = render
        self._retry_window = timedelta(hours=retry_hours)
        self._lease = timedelta(seconds=lease_seconds)
        self._jitter = jitter

    async def dispatch_round(self) -> float:
        """Deliver what is due in every shard; answers how long to wait before the next round."""
        now = self._clock.now()
        lease_until = now + self._lease
        claimed = await asyncio.gather(
            *(self._outbox.claim(shard, now, BATCH, lease_until) for shard in range(SHARDS))
        )
        sending = asyncio.Semaphore(CONCURRENCY)

        async def deliver(event: Event) -> None:
            async with sending:
                await self._deliver(event)

        await asyncio.gather(*(deliver(event) for events in claimed for event in events))
        return 0.0 if any(len(events) == BATCH for events in claimed) else POLL_SECONDS

    async def _deliver(self, event: Event) -> None:
        bound = log.bind(event=event.webhook_id, type=event.type, verification_id=event.verification.id)
        if event.tries == 0 and event.window_start == event.at:
            metrics.WEBHOOK_EVENTS.labels("emitted").inc()
        endpoint = self._endpoints.get(event.tenant)
        if endpoint is None:  # the tenant's webhook was removed since: nobody to tell
            await self._outbox.settle(event, self._clock.now(), "delivered")
            metrics.WEBHOOK_EVENTS.labels("dropped").inc()
            return
        body = self._render(event).decode()
        sent_at = self._clock.now()
        headers = {
            "content-type": "application/json",
            "webhook-id": event.webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": endpoint.signer.sign(event.webhook_id, sent_at, body),
        }
        try:
            response = await self._http.post(endpoint.url, content=body, headers=headers)
            error = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        now = self._clock.now()
        if not error:
            await self._outbox.settle(event, now, "delivered")
            metrics.WEBHOOK_EVENTS.labels("delivered").inc()
            metrics.WEBHOOK_LATENCY.observe(max(0.0, (now - event.at).total_seconds()))
            bound.info("webhook.delivered", tries=event.tries + 1)
            return
        tries = event.tries + 1
        retry_at = now + self._backoff(tries)
        if retry_at - event.window_start > self._retry_window:
            await self._outbox.settle(event, now, "dead", tries=tries, error=error)
            metrics.WEBHOOK_EVENTS.labels("dead_lettered").inc()
            bound.warning("webhook.dead_lettered", tries=tries, error=error)
            return
        await self._outbox.settle(event, now, "retry", retry_at=retry_at, tries=tries, error=error)
        metrics.WEBHOOK_EVENTS.labels("retried").inc()
        bound.info("webhook.retry", tries=tries, error=error, retry_at=_iso(retry_at))

    def _backoff(self, tries: int) -> timedelta:
        """Exponential, capped, with full jitter over its upper half (receivers that fail together
        are not retried together)."""
        ceiling = min(RETRY_LONGEST_SECONDS, RETRY_FIRST_SECONDS * 2 ** (tries - 1))
        return timedelta(seconds=ceiling * (0.5 + self._jitter() / 2))


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
