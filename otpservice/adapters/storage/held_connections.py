"""Scripts sent over connections this process holds, without a pool checkout per script.

Why not redis-py's pool for every script: since redis-py 8 each checkout takes the pool's lock,
asks the socket whether unread data waits (a system call), and records four observability events,
and each command goes through the retry wrapper and more records: about 126 us of CPU per script
here, of which sending and reading on a held connection are 56 (``bench/verify_cpu.py``; a check
runs two scripts). The client's own machinery stays the fallback for everything uncommon: a script
the server does not know yet (``NOSCRIPT``: the library loads it), and any connection failure (the
library retries on fresh connections, within the same time bound). Both are safe because every
script is retry-safe (see ``scripts``).

The connections are the pool's own, checked out once and kept: made like every other (same
address, credentials, timeouts and health checks; through Sentinel, the current master), counted
in the pool's size, and closed with the client. At most ``IDLE_MAX`` wait here; more go back to the
pool, so that held ones never take a connection another command needs (the pool's size leaves
room for them, see ``connection``). One that failed, or whose request was cancelled while its reply
was on the way, is closed and given back, never reused: a reply left unread would otherwise answer
the next script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.commands.core import AsyncScript

IDLE_MAX = 16


def packed(command: Sequence[str | int], encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``command`` in the protocol's request form (RESP), the bytes redis-py's ``pack_command`` sends.

    Why not ``pack_command``: it runs every argument through the client's encoder (type checks and
    a method call per argument) and splits the command name in case it holds spaces: 13 us for a
    check's script here, against 3 us for this, which needs neither (a script's arguments are text
    or integers, ``Storage.run``).
    """
    parts = [b"*%d\r\n" % len(command)]
    for argument in command:
        data = (argument if isinstance(argument, str) else str(argument)).encode(encoding, errors)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def _exchange(connection: AbstractConnection, command: tuple[str | int, ...]) -> Any:
    """Send ``command`` and read its reply as redis-py does, without its ``asyncio.wait_for``.

    Why not ``send_command``: with a socket timeout, redis-py sends through ``asyncio.wait_for``,
    which on Python 3.11 wraps the write in a task of its own that runs on the loop's next turn
    (10-20 us of CPU per script here, and a turn of latency). A small command on a connection with
    nothing else in flight leaves at once; only when some of it could not be, the send is awaited,
    within the socket timeout (the builtin ``TimeoutError`` then). The reply is read by redis-py
    itself, under its own socket timeout (redis-py's ``TimeoutError``, the connection closed). A
    connection that is not connected, or whose health check is due, takes redis-py's own path.
    """
    writer = connection._writer
    now = asyncio.get_running_loop().time()
    if writer is None or (connection.health_check_interval and now > connection.next_health_check):
        await connection.send_command(*command)
        return await connection.read_response()
    if writer.transport.is_closing():  # uvloop refuses writes to a closed handle with RuntimeError
        raise redis_errors.ConnectionError("the held connection is closing")
    try:
        writer.write(packed(command, connection.encoder.encoding, connection.encoder.encoding_errors))
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(connection.socket_timeout):
                await writer.drain()
    except OSError as exc:
        raise redis_errors.ConnectionError(f"error while writing to the server: {exc!r}") from exc
    return await connection.read_response()


class HeldConnections:
    """Idle connections of one client's pool, taken and put back without a lock (one event loop)."""

    def __init__(self, client: Redis):
        self._client = client
        self._idle: list[AbstractConnection] = []

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run ``script`` by its digest on a held connection; anything unusual goes to the client."""
        connection = await self._take()
        try:
            reply = await _exchange(connection, ("EVALSHA", script.sha, len(keys), *keys, *args))
        except redis_errors.NoScriptError:
            await self._put_back(connection)  # its reply was read whole: the connection is sound
            return await script(keys=list(keys), args=list(args))
        except redis_errors.ResponseError:
            await self._put_back(connection)
            raise
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, TimeoutError):
            await self._discard(connection)
            return await script(keys=list(keys), args=list(args))
        except BaseException:
            await self._discard(connection)
            raise
        await self._put_back(connection)
        return reply

    async def _take(self) -> AbstractConnection:
        while self._idle:
            connection = self._idle.pop()
            if not self._to_old_master(connection):
                return connection
            await self._discard(connection)
        return await self._check_out()

    async def _check_out(self) -> AbstractConnection:
        connection: AbstractConnection = await self._client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        if self._to_old_master(connection):  # left connected by a change the pool learnt of late
            try:
                await connection.disconnect()
                await connection.connect()  # type: ignore[no-untyped-call]  # through the sentinels, to the master
            except BaseException:
                await self._client.connection_pool.release(connection)  # not lost to the pool
                raise
        return connection

    async def _put_back(self, connection: AbstractConnection) -> None:
        if len(self._idle) < IDLE_MAX:
            self._idle.append(connection)
        else:
            await self._client.connection_pool.release(connection)

    def _to_old_master(self, connection: AbstractConnection) -> bool:
        """Whether ``connection`` goes to a server Sentinel no longer names as the master.

        The pool learns of a new master whenever it makes a connection (after a script's write was
        refused as READONLY by the demoted one, for instance), and then drops its own idle ones;
        held ones are in use to it, so they are dropped here, before their next script: a demoted
        master would refuse a write, but a script's run that only reads would get its answer.
        redis-py's own ``owns_connection`` is not used: its asyncio version calls a base method
        that does not exist.
        """
        pool = self._client.connection_pool
        if not isinstance(pool, SentinelConnectionPool) or pool.master_address is None:
            return False
        return bool(
            pool.master_address != (getattr(connection, "host", None), getattr(connection, "port", None))
        )

    async def _discard(self, connection: AbstractConnection) -> None:
        try:
            await connection.disconnect()
        finally:
            await self._client.connection_pool.release(connection)

    async def close(self) -> None:
        """Give every idle connection back to the pool (run when no script is in flight)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._client.connection_pool.release(connection)
