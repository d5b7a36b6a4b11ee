"""Every replica's "now" from one clock: the storage server's.

The verification scripts decide with the time their caller passes (expiry, cooldowns, the sliding
windows of the budgets and of the failure lock, who may claim what). Replicas whose own clocks
differ by a few seconds (NTP not yet converged, a paused VM) would otherwise disagree: one answers
"expired" while another approves the code, or a burst through a replica behind and one ahead passes
twice a budget's limit within one window. So each worker reads the storage server's clock (TIME)
now and then, and carries it forward with its own monotonic clock, which no wall-clock step moves.

In a Cluster every node has its own clock; all replicas read the one node serving the slot of
:data:`CLOCK_KEY`, so they agree with each other whatever the nodes' clocks say.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from prometheus_client import Gauge

from otpservice.adapters.storage.scripts import Storage
from otpservice.domain.clock import Clock, SystemClock
from otpservice.domain.errors import StorageUnavailable

log = structlog.get_logger(__name__)

# Whose slot's node tells the time in a Cluster (never written: only its slot matters).
CLOCK_KEY = "otp:clock"
# How often the storage clock is read again. The monotonic clock drifts from it by parts per million
# only, but the clock itself may change under the service: a standalone server restarted with
# another clock, a Cluster's slot of otp:clock moving to another node (Sentinel's changes of master
# are followed at once; see Storage.follow_master). A reading (three TIME round trips, the shortest
# kept) per worker every few seconds bounds how long replicas can disagree then.
SYNC_INTERVAL_SECONDS = 5.0
# After a failed reading, how soon to try again (doubling, up to SYNC_INTERVAL_SECONDS).
RETRY_SECONDS = 1.0
# A reading whose round trip took longer is not trusted (its error is up to half the round trip).
# Generous: a storage server far away is still a better clock for every replica than their own.
MAX_ROUND_TRIP_SECONDS = 1.0
# A new reading behind the time already told holds the clock still until it catches up, for at
# most this long; further behind (a failover to a primary whose clock is minutes off), holding would
# stop expiry, cooldowns and every schedule for as long, so the clock steps back instead, logged.
MAX_HOLD_SECONDS = 2.0
# The local wall clock this far from the storage clock is worth a warning: something else on the
# machine (logs, TLS, the provider's timestamps) is that far off too.
SKEW_WARNING_SECONDS = 1.0

CLOCK_SYNCHRONISED = Gauge(
    "otp_clock_synchronised",
    "1 while this worker tells the storage server's time, 0 while it uses its own clock",
    multiprocess_mode="liveall",
)
CLOCK_OFFSET = Gauge(
    "otp_clock_offset_seconds",
    "The storage server's clock minus this worker's wall clock, at the last reading",
    multiprocess_mode="liveall",
)


class StorageClock:
    """The storage server's clock, carried forward between readings by the monotonic clock.

    Until its first reading succeeds (storage unreachable at start) it answers the ``fallback``
    clock, the machine's own.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        fallback: Clock | None = None,
    ):
        self._storage = storage
        self._monotonic = monotonic
        self._fallback = fallback or SystemClock()
        # (the storage clock's epoch seconds, the monotonic time of that same moment)
        self._base: tuple[float, float] | None = None
        self._latest = 0.0  # the latest time told, in epoch seconds
        self._failing = False  # the last reading failed (its warning is logged once)
        self._warned_offset: float | None = None  # the skew last warned of (warned again when it moves)

    @property
    def synchronised(self) -> bool:
        return self._base is not None

    def now(self) -> datetime:
        base = self._base
        if base is None:
            # counted as told, so the storage clock, once read, does not take it back (MAX_HOLD_SECONDS)
            self._latest = max(self._latest, self._fallback.now().timestamp())
            return datetime.fromtimestamp(self._latest, UTC)
        epoch, at = base
        # Never earlier than a time already told: a new reading a little behind the last one's
        # carried time (the monotonic clock's drift, a failover to a primary whose clock is behind)
        # holds the clock still until it catches up, rather than stamping a change before an
        # earlier one.
        self._latest = max(self._latest, epoch + (self._monotonic() - at))
        return datetime.fromtimestamp(self._latest, UTC)

    async def synchronise(self, attempts: int = 3) -> bool:
        """Read the storage clock (the reading with the shortest round trip of ``attempts``); False
        when no reading could be trusted, and the clock goes on as it was."""
        best: tuple[float, float, float] | None = None  # (round trip, epoch, monotonic midpoint)
        for _ in range(attempts):
            sent = self._monotonic()
            try:
                epoch = await self._storage.server_time(CLOCK_KEY)
            except StorageUnavailable:
                break  # storage is not answering: the next round tries again
            answered = self._monotonic()
            round_trip = answered - sent
            if best is None or round_trip < best[0]:
                best = (round_trip, epoch, (sent + answered) / 2)
        if best is None or best[0] > MAX_ROUND_TRIP_SECONDS:
            if not self._failing:  # once per run of failures, not at every retry
                log.warning(
                    "clock.not_synchronised",
                    round_trip_ms=None if best is None else round(best[0] * 1000, 1),
                    using="storage" if self._base is not None else "local",
                )
            self._failing = True
            return False
        self._failing = False
        reading = best[1] + (self._monotonic() - best[2])
        behind = self._latest - reading
        if behind > MAX_HOLD_SECONDS:
            log.error("clock.stepped_back", seconds=round(behind, 3))
            self._latest = reading
        self._base = (best[1], best[2])
        CLOCK_SYNCHRONISED.set(1)
        offset = reading - self._fallback.now().timestamp()
        CLOCK_OFFSET.set(offset)
        if abs(offset) < SKEW_WARNING_SECONDS / 2:  # mended, beyond a reading's jitter
            self._warned_offset = None  # a skew coming back is warned of again
        elif self._warned_offset is None or abs(offset - self._warned_offset) >= SKEW_WARNING_SECONDS:
            log.warning("clock.skewed", offset_seconds=round(offset, 3))  # once per skew, not per reading
            self._warned_offset = offset
        return True

    async def keep_synchronised(self, stop: asyncio.Event) -> None:
        """After the reading at start, read the storage clock again every SYNC_INTERVAL_SECONDS (sooner
        while readings fail, backing off) until ``stop`` is set."""
        retry = RETRY_SECONDS
        while True:
            wait = retry if self._failing or self._base is None else SYNC_INTERVAL_SECONDS
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
                return
            except TimeoutError:
                pass
            retry = RETRY_SECONDS if await self.synchronise() else min(retry * 2, SYNC_INTERVAL_SECONDS)
