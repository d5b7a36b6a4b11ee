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
from datetime import timedelta

import httpx
import structlog
from standardwebhooks import Webhook

from otpservice.adapters.storage.keys import SHARDS
from otpservice.adapters.storage.outbox import Event, EventOutbox
from otpservice.domain.clock import Clock, to_iso
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
    """Keeps up to ``CONCURRENCY`` deliveries going; claims only as many events as it can send now.

    Why claim no more than the free slots: an event's lease runs from its claim, so an event
    claimed but left waiting behind slow receivers could outlive its lease and be sent by another
    worker at the same time. Each delivery is bounded by the receiver timeout, well inside its lease.
    """

    def __init__(
        self,
        *,
        outbox: EventOutbox,
        http: httpx.AsyncClient,
        clock: Clock,
        endpoints: Mapping[str, Endpoint],
        render: Callable[[Event], bytes],
        retry_hours: float,
        receiver_timeout_seconds: float,
        on_settled: Callable[[], None] = lambda: None,
        jitter: Callable[[], float] = random.random,
    ):
        self._outbox = outbox
        self._http = http
        self._clock = clock
        self._endpoints = endpoints
        self._render = render
        self._retry_window = timedelta(hours=retry_hours)
        self._timeout = receiver_timeout_seconds
        self._lease = timedelta(seconds=lease_seconds(receiver_timeout_seconds))
        self._jitter = jitter
        self._on_settled = on_settled  # a slot came free, and the next event of its verification may go
        self._sending: set[asyncio.Task[None]] = set()
        self._next_shard = 0

    async def dispatch_round(self) -> float:
        """Claim due events for the free slots (shards in turn) and start sending them; answers how
        long to wait before the next round."""
        free = CONCURRENCY - len(self._sending)
        looked = 0
        while free > 0 and looked < SHARDS:
            shard = self._next_shard
            self._next_shard = (shard + 1) % SHARDS
            looked += 1
            # each claim's own time: claims one after another under slow storage take seconds, and
            # a lease counted from the round's start could be over before its event is even sent
            now = self._clock.now()
            for event in await self._outbox.claim(shard, now, free, now + self._lease):
                task = asyncio.create_task(self._deliver(event))
                self._sending.add(task)
                task.add_done_callback(self._sent)
                free -= 1
        return 0.0 if free == 0 else POLL_SECONDS

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._on_settled()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook.failed", error=type(task.exception()).__name__)

    async def drain(self) -> None:
        """Let the deliveries under way finish (at shutdown); each is bounded by its timeout."""
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def _deliver(self, event: Event) -> None:
        bound = log.bind(event=event.webhook_id, type=event.type, verification_id=event.verification.id)
        if event.first_lease and event.window_start == event.at:  # not a revived dead letter
            metrics.WEBHOOK_EVENTS.labels("emitted").inc()
        endpoint = self._endpoints.get(event.tenant)
        if endpoint is None:
            # A failed try, not a drop: during a rollout a replica still on the old tenant list
            # claims events of a webhook only the new replicas know, and one of them sends it on a
            # later try. A webhook really removed ends in the dead letters, where it can be resent.
            error = "no webhook configured for the tenant on this worker"
        else:
            error = await self._send(event, endpoint)
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
        bound.info("webhook.retry", tries=tries, error=error, retry_at=to_iso(retry_at))

    async def _send(self, event: Event, endpoint: Endpoint) -> str:
        """POST the event, signed; answers what went wrong ('' when the receiver took it)."""
        body = self._render(event).decode()
        sent_at = self._clock.now()
        headers = {
            "content-type": "application/json",
            "webhook-id": event.webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": endpoint.signer.sign(event.webhook_id, sent_at, body),
        }
        try:
            # the whole exchange, not each phase: a receiver trickling bytes must not outlive the lease
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(endpoint.url, content=body, headers=headers)
        except Exception as exc:  # any failure to send is a failed try: retried, then dead-lettered
            # (not only httpx's own errors: an unusable URL raised InvalidURL, a port beyond range an
            # ExceptionGroup from the connection, and the event was never settled, holding up its
            # verification's next events for good)
            return type(exc).__name__
        return "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

    def _backoff(self, tries: int) -> timedelta:
        """Exponential, capped, with full jitter over its upper half (receivers that fail together
        are not retried together)."""
        ceiling = min(RETRY_LONGEST_SECONDS, RETRY_FIRST_SECONDS * 2 ** (tries - 1))
        return timedelta(seconds=ceiling * (0.5 + self._jitter() / 2))
