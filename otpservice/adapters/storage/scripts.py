"""Running the Lua scripts beside this module, and turning storage failures into one domain error.

Each script lives in its own ``lua/*.lua`` file (reviewable, with its keys and arguments documented
at the top); the verification scripts share ``_prelude.lua``. Every script is retry-safe: repeating
it with the same arguments changes nothing more, which is what lets the client retry a command
whose reply was lost (a dead pooled connection, a restart, a failover) without spending anything
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import structlog
from prometheus_client import Counter
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from otpservice.adapters.storage.connection import POOL_SIZE, RedisClient
from otpservice.adapters.storage.held_connections import HeldConnections
from otpservice.domain.errors import StorageUnavailable

log = structlog.get_logger(__name__)
T = TypeVar("T")
# One per round trip a request or the reconciler makes (a script counts once), by script or command.
OPERATIONS = Counter("otp_storage_operations", "Storage round trips, by script or command", ["operation"])

# Scripts that work on something other than a verification record, so go without the prelude.
_STANDALONE = frozenset(
    {
        "claim_due_calls",
        "take_calls",
        "give_back_calls",
        "idempotency_claim",
        "idempotency_settle",
        "claim_events",
        "event_settled",
        "event_revive",
    }
)
# Server answers that mean "not now" rather than "wrong": a failover, a full memory, a busy script.
_TRANSIENT_REPLIES = ("BUSY", "NOREPLICAS", "MASTERDOWN", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "OOM")
_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.RedisClusterException,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.TryAgainError,
    TimeoutError,
)


def _source(name: str) -> str:
    return resources.files("otpservice.adapters.storage").joinpath("lua", f"{name}.lua").read_text()


def script_source(name: str) -> str:
    """The full text Redis runs: the window functions, the verification prelude, the script's file."""
    own = _source(name)
    return _source("_windows") + (own if name in _STANDALONE else _source("_prelude") + own)


_TIME_OF_THE_KEY_S_NODE = "return redis.call('TIME')"

# A script reaching a key its node no longer holds: the shard's Cluster slot is moving to another
# node (a reshard). Not now, rather than wrong: the script stopped before writing (see touch() in
# lua/_prelude.lua), and once the slot has moved the same call succeeds there.
_SLOT_MOVING = "non local key"


# What a command meets when redis-py closed its connection under it: no stream left to write to, or
# the closed transport of the stream (uvloop's words).
_CONNECTION_MODULE = "redis/asyncio/connection.py"
_STREAM_METHODS = frozenset({"write", "writelines", "drain", "read", "readline", "readexactly", "readuntil"})
_CLOSED_TRANSPORT = "unable to perform operation on"


def closed_under_it(exc: BaseException) -> bool:
    """Whether a command failed because its connection was closed while it ran, by the client itself.

    redis-py's Cluster client closes every node's connections when it reloads its map of the
    cluster (on CLUSTERDOWN during a failover, for one), those other commands are using included;
    they then fail inside the client with AttributeError (its stream gone) or RuntimeError (a closed
    transport) rather than a ConnectionError, so redis-py does not retry them. Told apart from a bug
    by exactly what failed, and where: in redis-py's connection, on its stream.
    """
    if isinstance(exc, AttributeError):
        if exc.obj is not None or exc.name not in _STREAM_METHODS:
            return False
        frames = traceback.extract_tb(exc.__traceback__)
        return bool(frames) and frames[-1].filename.endswith(_CONNECTION_MODULE)
    if isinstance(exc, RuntimeError) and str(exc).startswith(_CLOSED_TRANSPORT):
        return any(
            frame.filename.endswith(_CONNECTION_MODULE) for frame in traceback.extract_tb(exc.__traceback__)
        )
    return False


def is_unavailable(exc: BaseException) -> bool:
    """Whether a failure means storage could not be reached in time (as opposed to a bug)."""
    if isinstance(exc, _UNAVAILABLE) or closed_under_it(exc):
        return True
    return isinstance(exc, redis_errors.ResponseError) and (
        str(exc).startswith(_TRANSIENT_REPLIES) or _SLOT_MOVING in str(exc)
    )


# How often each worker asks the sentinels which server is the master (see Storage.follow_master).
MASTER_POLL_SECONDS = 0.5


def _address(address: Any) -> str:
    host, port = address
    return f"{host}:{port}"


class Storage:
    """One Redis client, its scripts, and the time bound of every operation on it."""

    def __init__(
        self, client: RedisClient, *, operation_timeout_seconds: float, concurrency: int = POOL_SIZE
    ):
        self.client = client
        self._timeout = operation_timeout_seconds
        # Operations beyond the pool's size wait their turn (within the bound) instead of failing:
        # redis-py's pools refuse a command outright when they are exhausted.
        self._slots = asyncio.Semaphore(concurrency)
        self._scripts: dict[str, Any] = {}
        self._counted: dict[str, Any] = {}
        self._started = asyncio.Lock()
        self._ready = not isinstance(client, RedisCluster)
        # One server (or Sentinel's master): scripts skip the pool's checkout (see held_connections).
        # A Cluster client routes each script to its slot's node itself.
        self._held = None if isinstance(client, RedisCluster) else HeldConnections(client)
        # A Cluster client replaces its seed nodes once it has discovered the others.
        self._seeds = (
            list(client.nodes_manager.startup_nodes.values()) if isinstance(client, RedisCluster) else []
        )
        # The clients asking the sentinels, as they were made: redis-py moves the one that answered
        # to the front of its list with a swap, and two concurrent lookups (a failover, when every
        # new connection asks) can leave one client in the list twice and another not at all, with
        # its connections; closing from the list alone leaked them (136 at once in one test run).
        pool = getattr(client, "connection_pool", None)
        self._sentinels = (
            list(pool.sentinel_manager.sentinels) if isinstance(pool, SentinelConnectionPool) else []
        )

    @property
    def one_server(self) -> bool:
        """Whether every key lives on one server (one server, or Sentinel's master): then a script
        may touch keys of any slot; in a Cluster only keys of one slot."""
        return not isinstance(self.client, RedisCluster)

    async def _start(self) -> None:
        """Learn the Cluster's topology once, before any command runs.

        Why: redis-py's async Cluster client can hand a connection that a concurrent first
        discovery is still setting up to another command (seen here as an AttributeError deep in
        the client under concurrent first commands); one discovery under a lock avoids that.
        """
        async with self._started:
            if not self._ready:
                assert isinstance(self.client, RedisCluster)
                await self.client.initialize()
                self._ready = True

    async def close(self) -> None:
        """Close every connection, also those a Cluster client would forget (seeds, an unfinished start)."""
        if self._held is not None:
            await self._held.close()
        await self.client.aclose()
        for sentinel in self._sentinels:  # the clients asking the sentinels are its own
            await sentinel.aclose()
        if isinstance(self.client, RedisCluster):
            for node in (*self._seeds, *self.client.nodes_manager.nodes_cache.values()):
                await node.disconnect()

    async def run(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        """Run one script atomically on the slot of ``keys`` (all share one hash tag)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(script_source(name))
        texts = [str(a) for a in args]
        held = self._held
        if held is not None:
            return await self.call(lambda: held.run(script, keys, texts), name)
        return await self.call(lambda: script(keys=list(keys), args=texts), name)

    async def follow_master(
        self,
        stop: asyncio.Event,
        on_change: Callable[[], Awaitable[object]] | None = None,
        interval_seconds: float = MASTER_POLL_SECONDS,
    ) -> None:
        """Under Sentinel, ask the sentinels for the master every ``interval_seconds`` until ``stop``;
        ``on_change`` runs after each change of master this worker learns of.

        Why: redis-py asks only when it opens a connection, and a promotion that leaves the old
        master alive (a planned ``SENTINEL FAILOVER``, a false alarm, a partition) fails no
        connection: every worker went on writing to the old master until Sentinel demoted it about
        10 s later, and the resync then threw those writes away (verifications created, attempts
        judged, approvals, budget counts). Once the pool knows (see ``FollowingSentinelPool``), its
        idle connections are closed at once, those in use as they come back, and the held script
        connections before their next script (HeldConnections).
        """
        pool = getattr(self.client, "connection_pool", None)
        if not isinstance(pool, SentinelConnectionPool):
            return
        unreachable = False
        seen = getattr(pool, "changes", 0)
        while not stop.is_set():
            try:
                asking = pool.get_master_address()  # type: ignore[no-untyped-call]
                await asyncio.wait_for(asking, timeout=self._timeout)
            except (redis_errors.RedisError, OSError, TimeoutError) as exc:
                if not unreachable:  # once per outage: the connections' own errors say the rest
                    log.warning("storage.sentinels_unreachable", error=type(exc).__name__)
                unreachable = True
            else:
                unreachable = False
            changes = getattr(pool, "changes", 0)
            if changes != seen:  # learnt here or by a connection being made meanwhile
                seen = changes
                log.warning("storage.master_changed", master=_address(pool.master_address))
                if on_change is not None:
                    with contextlib.suppress(Exception):  # its own failures are its own to log
                        await on_change()
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
            except TimeoutError:
                continue

    async def server_time(self, key: str) -> float:
        """The server's clock (TIME), in epoch seconds; in a Cluster, of the node serving ``key``'s slot."""
        client = self.client
        if isinstance(client, RedisCluster):
            # Asked through the key, not of the node the client's map names for its slot: a MOVED
            # answer corrects the route, where a node demoted by a planned failover would go on
            # answering a keyless TIME (the map is reloaded only on errors; see connection).
            seconds, micros = await self.call(lambda: client.eval(_TIME_OF_THE_KEY_S_NODE, 1, key), "time")
        else:
            seconds, micros = await self.call(client.time, "time")
        return int(seconds) + int(micros) / 1_000_000

    async def call(self, operation: Callable[[], Awaitable[T]], name: str) -> T:
        """Await one storage operation within the bound; a failure to reach storage is one error.

        The client itself retries a lost connection (see ``connection``); this bound covers those
        retries and the wait for a free slot. Closing the connection a timed-out command leaves
        behind can add up to one socket timeout more.
        """
        counted = self._counted.get(name)
        if counted is None:  # labelled once per name: a lookup under a lock on every call showed
            counted = self._counted[name] = OPERATIONS.labels(name)
        counted.inc()
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                if not self._ready:
                    await self._start()
                return await operation()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("storage.unavailable", error=type(exc).__name__)
            raise StorageUnavailable() from exc
