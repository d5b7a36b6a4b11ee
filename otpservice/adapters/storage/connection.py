"""Connecting to Redis as one server, through Sentinel, or as a Cluster, with connections that heal.

Every command has ``timeout`` seconds to connect and answer, and is retried twice with a short
jittered backoff after a connection error or a timeout, on a fresh connection: that is how a pooled
connection left dead by a restart or a failover is replaced instead of failing a request. Retrying is
safe because every write the service makes is idempotent (see ``scripts``). Idle connections are
pinged before use.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff

from otpservice.adapters.storage.held_connections import IDLE_MAX
from otpservice.redis_url import RedisTarget

RedisClient: TypeAlias = Redis | RedisCluster
# Two retries: Settings.storage_bound_seconds (three tries of the timeout) is derived from this.
RETRIES = 2
POOL_SIZE = 64
_HEALTH_CHECK_SECONDS = 15


class FollowingSentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, also closing the connections in use to a replaced master.

    When the pool learns of a new master it closes its idle connections; the asyncio pool returns
    those in use to the available list as they were (it never asks ``owns_connection``), still on
    the old master, which takes writes until Sentinel demotes it seconds later and its resync
    throws them away. Each connection is checked as it comes back instead: one to a server other
    than the master is closed. ``changes`` counts the masters learnt of, whoever asked (a poll, or
    a connection being made).
    """

    changes = 0

    async def release(self, connection: Any) -> None:
        address = self.master_address
        if self.is_master and address is not None and (connection.host, connection.port) != address:
            connection.mark_for_reconnect()  # closed by the release, reopened to the master when used
        await super().release(connection)

    async def get_master_address(self) -> Any:
        previous = self.master_address
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        if self.is_master and previous is not None and address != previous:
            self.changes += 1
        return address


def connect(target: RedisTarget, *, timeout_seconds: float) -> RedisClient:
    """A client for the target whose commands retry on fresh connections within a known bound."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES),
        "health_check_interval": _HEALTH_CHECK_SECONDS,
    }
    if target.kind == "single":
        # Storage admits at most POOL_SIZE operations at once, and keeps at most IDLE_MAX connections
        # for its scripts (held_connections), so the pool never runs dry.
        single: Redis = Redis.from_url(target.url, max_connections=POOL_SIZE + IDLE_MAX, **options)
        return single
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.tls:
        credentials["ssl"] = True
    if target.kind == "sentinel":
        sentinels = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            sentinel_kwargs={
                "socket_timeout": timeout_seconds,
                "socket_connect_timeout": timeout_seconds,
                **({"ssl": True} if target.tls else {}),
            },
            **options,
            **credentials,
        )
        master: Redis = sentinels.master_for(
            target.master_name, connection_pool_class=FollowingSentinelPool, db=target.db
        )
        return master
    options.pop("health_check_interval")  # the cluster client checks its nodes its own way
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        max_connections=POOL_SIZE,
        # A MOVED answer updates the one slot it names. By default every fifth one reloads the whole
        # map by closing every node's connections, those in use by other commands too (see
        # scripts.closed_under_it); a connection error or CLUSTERDOWN still reloads it.
        reinitialize_steps=0,
        **options,
        **credentials,
    )
