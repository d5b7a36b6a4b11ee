"""Scripts over held connections: the same answers as through the pool, and nothing left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from otpservice.adapters.storage.held_connections import IDLE_MAX, HeldConnections, packed
from tests.support.redis_servers import ServerProcess, standalone_server

ECHO = "return ARGV[1]"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, max_connections=64)
    yield client
    await client.aclose()


async def stalled_then_back(
    client: Redis, server: ServerProcess, stalled_error: type[BaseException], give_up_after: float
) -> None:
    """One script while ``server`` is paused ends in ``stalled_error`` (its caller gives up after
    ``give_up_after`` seconds at most); once the server is back, the next script reads its own reply."""
    held = HeldConnections(client)
    script = client.register_script(ECHO)
    assert await held.run(script, [], ["warm"]) == b"warm"
    server.pause()
    try:
        with pytest.raises(stalled_error):
            async with asyncio.timeout(give_up_after):
                await held.run(script, [], ["stalled"])
    finally:
        server.resume()
    assert await held.run(script, [], ["back"]) == b"back"
    await held.close()


async def test_a_reply_still_on_its_way_when_the_request_gave_up_never_answers_the_next() -> None:
    """A script whose caller stopped waiting (the server stalled) closes its connection, so the next
    script, once the server is back, reads its own reply and not the late one."""
    with standalone_server() as server:
        client = Redis.from_url(server.url)
        try:
            await stalled_then_back(client, server, TimeoutError, give_up_after=0.2)
        finally:
            await client.aclose()


async def test_a_stalled_server_ends_the_script_at_the_socket_timeout_and_the_next_is_answered() -> None:
    """With the server paused, a script ends in redis-py's TimeoutError at the socket timeout (no
    retries here), not in a wait without end; once the server is back, the next is answered."""
    with standalone_server() as server:
        client = Redis.from_url(server.url, socket_timeout=0.1, retry=Retry(NoBackoff(), 0))
        try:  # the caller's 10 s are a guard: the socket timeout ends it long before
            await stalled_then_back(client, server, redis_errors.TimeoutError, give_up_after=10)
        finally:
            await client.aclose()


async def test_a_held_connection_whose_health_check_is_due_is_checked_and_used() -> None:
    """A held connection idle past the health check interval goes through redis-py's own send (a
    PING first), and the script is answered on it."""
    with standalone_server() as server:
        client = Redis.from_url(server.url, health_check_interval=0.05)
        observer = Redis.from_url(server.url)  # no health checks of its own: counts only the held one's

        async def pings() -> int:
            calls: int = (await observer.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0)
            return calls

        try:
            held = HeldConnections(client)
            script = client.register_script(ECHO)
            assert await held.run(script, [], ["first"]) == b"first"
            before = await pings()
            await asyncio.sleep(0.1)  # idle past the interval: the next script's connection is checked
            assert await held.run(script, [], ["checked"]) == b"checked"
            assert await pings() == before + 1
            await held.close()
        finally:
            await client.aclose()
            await observer.aclose()


def test_a_script_is_sent_as_the_very_bytes_redis_py_would_send() -> None:
    """The packed command equals redis-py's own for text, non-ASCII text, integers and a long value."""
    command = ("EVALSHA", "a" * 40, 2, "{v:1}:v", "{v:1}:x", "Lê Văn ☎", 0, -17, "x" * 70_000, "")
    assert packed(command) == b"".join(Connection().pack_command(*command))


async def test_a_script_the_server_forgot_is_loaded_and_run(redis: Redis) -> None:
    """After SCRIPT FLUSH (a restart without persistence, a failover) the script still runs once."""
    held = HeldConnections(redis)
    script = redis.register_script("return redis.call('INCR', KEYS[1])")
    key = "held:{flushed}"
    await redis.delete(key)
    assert await held.run(script, [key], []) == 1
    await redis.script_flush()
    assert await held.run(script, [key], []) == 2


async def test_a_connection_the_server_closed_is_replaced(redis: Redis) -> None:
    """A held connection killed by the server fails over to a fresh one within the same call."""
    held = HeldConnections(redis)
    script = redis.register_script(ECHO)
    assert await held.run(script, [], ["before"]) == b"before"
    killed = await redis.client_kill_filter(_type="normal", skipme=False)
    assert killed >= 1
    assert await held.run(script, [], ["after"]) == b"after"


async def test_a_script_error_reaches_the_caller_and_the_connection_stays_usable(redis: Redis) -> None:
    """An error the script raises is the caller's, and the next script on that connection is answered."""
    held = HeldConnections(redis)
    with pytest.raises(Exception, match="refused on purpose"):
        await held.run(redis.register_script("return redis.error_reply('refused on purpose')"), [], [])
    assert await held.run(redis.register_script(ECHO), [], ["next"]) == b"next"


async def test_at_most_idle_max_connections_are_kept_after_a_burst(redis: Redis) -> None:
    """After 40 scripts at once, at most IDLE_MAX connections stay held; the rest are the pool's again."""
    held = HeldConnections(redis)
    script = redis.register_script(ECHO)
    answers = await asyncio.gather(*(held.run(script, [], [str(n)]) for n in range(40)))
    assert answers == [str(n).encode() for n in range(40)]
    pool = redis.connection_pool
    assert len(pool._in_use_connections) <= IDLE_MAX
    await held.close()
    assert len(pool._in_use_connections) == 0
