"""Run an ASGI app on a real loopback socket in a background thread, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connections are refused until the block ends: bound, not listening.
    Held, unlike a port from free_port(), which another test's server may take meanwhile (a "nobody
    listens here" address then reached that server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class _PromptServer(uvicorn.Server):
    """A uvicorn server that stops as soon as it is told, instead of at its next 0.1 s tick."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=0.1)
            except TimeoutError:
                continue

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown without its fixed 0.1 s pause: poll for the connections to close."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        deadline = time.monotonic() + 10
        while (  # noqa: ASYNC110 - uvicorn offers no event to wait on
            self.server_state.connections or self.server_state.tasks
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for task in self.server_state.tasks:
            task.cancel()
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()

    def stop_now(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed: the server stopped already
                self._loop.call_soon_threadsafe(self._stop.set)


def bound_socket(port: int = 0) -> socket.socket:
    """A socket bound on 127.0.0.1 (to a port the kernel picks, by default), held until served.

    Why not free_port() then bind: between the two another test (or a process just killed and
    restarted) can take the port; a socket held from the start cannot lose it.

    The protocol is named: asyncio turns Nagle's algorithm off only on connections whose socket says
    IPPROTO_TCP, and socket.socket() says 0. With Nagle on, uvicorn's answer (head and body written
    apart) met the client's delayed ACK: every request to a test server took 40 ms more.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextmanager
def serve_in_thread(
    app: Any, port: int | None = None, sock: socket.socket | None = None, **options: Any
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in its own thread and event loop; yield its base URL."""
    sock = sock or bound_socket(port or 0)
    port = int(sock.getsockname()[1])
    # A long keep-alive: a slow test must not race uvicorn closing an idle connection it reuses.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        loop="asyncio",
        **{"timeout_keep_alive": 60, **options},
    )
    server = _PromptServer(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.002)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop_now()
        thread.join(timeout=10)
        sock.close()
