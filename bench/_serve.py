"""Helpers for benchmarks that drive ``otpservice serve`` from outside: the serve process, readings of
its worker processes from /proc, a /healthz poller, and a light HTTP/1.1 load client.

Standard library only (and uvloop), so that the load client, a process of its own, starts fast and
spends little CPU: on a 2-core machine every cycle the client spends is one the server does not get.

The load client, ``python -m bench._serve client``, reads its spec as one JSON line on stdin, opens
one keep-alive connection per virtual user and sends ``POST /verify`` with a wrong code back to back
(the next request as soon as the answer arrives, a refusal included), rotating over the given
verification ids so that none runs out of attempts (with ``honor_retry_after``, a user waits the
Retry-After of a refusal before its next request). It warms up for ``warmup`` seconds, prints
``measuring``, runs ``seconds`` more, prints ``done``, finishes the requests in flight and prints one
JSON line: every request's start, latency, status and problem code, and its own CPU time in the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ACCEPTED, OVERLOADED = "accepted", "overloaded"


# --- the serve process ------------------------------------------------------------------------------


@dataclass
class Served:
    """A running ``otpservice serve``: where it listens, its process and its worker processes."""

    url: str
    port: int
    pid: int
    worker_pids: list[int]
    ready: list[dict[str, Any]] = field(default_factory=list)  # each worker's "hashing.ready" log line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(
    env: dict[str, str],
    workers: int,
    log: Path,
    start_timeout: float = 120.0,
    interpreter_options: tuple[str, ...] = (),
) -> Iterator[Served]:
    """``otpservice serve --workers N`` on a free loopback port, its OTP_PUBLIC_URL pointing at itself.

    Ready once every worker has logged ``hashing.ready`` and /healthz answers. It runs in a session
    of its own, so a Ctrl-C reaches only this process, which stops it (SIGTERM; after 20 s SIGKILL
    to its whole process group, workers included) however the block ends. ``interpreter_options``
    go before ``-m otpservice``: ``-m cProfile -o FILE`` profiles the event loop of a single worker
    (with one, uvicorn serves from the serve process itself).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        *interpreter_options,
        "-m",
        "otpservice",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own entry point
            [*command, "--workers", str(workers)],
            env=env | {"OTP_PUBLIC_URL": url},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            ready = _ready_lines(log)
            if len(ready) >= workers and _answers(url):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"serve --workers {workers} not ready within {start_timeout} s")
            time.sleep(0.1)
        yield Served(url, port, process.pid, _worker_pids(process.pid, workers), ready)
    finally:
        stop_process(process, grace=20.0)


def stop_process(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL to the process group (it leads one: start_new_session) after ``grace`` s."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # Whatever is left of its group (a worker orphaned by a crash) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _ready_lines(log: Path) -> list[dict[str, Any]]:
    ready = []
    for line in log.read_text(errors="replace").splitlines():
        if "hashing.ready" in line:
            with contextlib.suppress(ValueError):
                ready.append(json.loads(line))
    return ready


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310 - loopback http
            return bool(response.status == 200)
    except OSError:
        return False


def _worker_pids(pid: int, workers: int) -> list[int]:
    """With one worker uvicorn serves from the serve process itself; with more, from spawned children."""
    if workers == 1:
        return [pid]
    deadline = time.monotonic() + 10
    while True:
        found = [child for child in children(pid) if "spawn_main" in cmdline(child)]
        if len(found) == workers:
            return sorted(found)
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected {workers} worker processes under {pid}, found {found}")
        time.sleep(0.05)


# --- /proc --------------------------------------------------------------------------------------------


def _children_by_parent() -> dict[int, list[int]]:
    """Every process on the machine, listed under its parent (one scan of /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry))
    return parents


def children(pid: int) -> list[int]:
    return _children_by_parent().get(pid, [])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status: VmRSS (resident now) or VmHWM (its peak so far)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads, finished ones included), or of one thread."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (fields 14, 15)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    parents = _children_by_parent()
    found, todo = [], [pid]
    while todo:
        below = parents.get(todo.pop(), [])
        found += below
        todo += below
    return found


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine (all CPUs, every process, also those of other containers) was busy."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS  # all but idle and iowait


def own_cpu_seconds() -> float:
    """CPU seconds of this process and every process below it (servers, clients, valkey)."""
    total = cpu_seconds(os.getpid())
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(pid)
    return total


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds of each worker process: all its threads, and its main thread (the event loop)."""

    totals: tuple[float, ...]
    loops: tuple[float, ...]

    @classmethod
    def of(cls, pids: list[int]) -> CpuReading:
        return cls(tuple(cpu_seconds(pid) for pid in pids), tuple(cpu_seconds(pid, pid) for pid in pids))

    @property
    def total(self) -> float:
        return sum(self.totals)

    @property
    def loop(self) -> float:
        return sum(self.loops)

    def __sub__(self, other: CpuReading) -> CpuReading:
        return CpuReading(
            tuple(a - b for a, b in zip(self.totals, other.totals, strict=True)),
            tuple(a - b for a, b in zip(self.loops, other.loops, strict=True)),
        )


class RssSampler:
    """Samples VmRSS of the given processes every ``interval`` seconds while in use; keeps each one's peak."""

    def __init__(self, pids: list[int], interval: float = 0.05):
        self.peak_kib = dict.fromkeys(pids, 0)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.peak_kib:
                with contextlib.suppress(OSError, RuntimeError):
                    self.peak_kib[pid] = max(self.peak_kib[pid], status_kib(pid, "VmRSS"))
            self._stop.wait(self._interval)


class HealthPoller:
    """GET /healthz every ``interval`` seconds on a keep-alive connection of its own, from start() to stop().

    Requests keep to a fixed schedule; one that takes longer than the interval is followed at once.
    """

    def __init__(self, port: int, interval: float = 0.02):
        self.latencies: list[float] = []
        self.failures = 0
        self._port = port
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
        next_at = time.perf_counter()
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    connection.request("GET", "/healthz")
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        raise OSError(f"/healthz answered {response.status}")
                    self.latencies.append(time.perf_counter() - started)
                except (OSError, http.client.HTTPException):
                    self.failures += 1
                    connection.close()
                next_at = max(next_at + self._interval, time.perf_counter())
                self._stop.wait(next_at - time.perf_counter())
        finally:
            connection.close()


# --- the load client, as seen from the benchmark ----------------------------------------------------


@dataclass
class Requests:
    """What the load client saw: one row per request (start and latency in seconds, from its start)."""

    starts: list[float]
    latencies: list[float]
    statuses: list[int]
    codes: list[str]  # ACCEPTED (200), OVERLOADED (503 overloaded), else "<status> <problem code>"
    retry_after: list[str]  # the Retry-After header ("" when absent)
    window: tuple[float, float]
    client_cpu_seconds: float
    transport_errors: int


class _Lines:
    """Lines of a pipe, read by a thread, so that waiting for one can time out."""

    def __init__(self, stream: IO[str]):
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def next(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the load client said nothing for {timeout} s") from None
        if line is None:
            raise RuntimeError("the load client ended early")
        return line.rstrip("\n")


@contextlib.contextmanager
def load_client(spec: dict[str, Any]) -> Iterator[_LoadClient]:
    """The load client started with ``spec``; killed (with its session) when the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench._serve", "client"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps(spec) + "\n")
        process.stdin.close()
        yield _LoadClient(_Lines(process.stdout))
    finally:
        stop_process(process, grace=0)


@dataclass
class _LoadClient:
    lines: _Lines

    def expect(self, word: str, timeout: float) -> None:
        line = self.lines.next(timeout)
        if line != word:
            raise RuntimeError(f"the load client said {line[:200]!r}, not {word!r}")

    def result(self, timeout: float) -> Requests:
        data = json.loads(self.lines.next(timeout))
        rows = data["rows"]
        return Requests(
            starts=[row[0] for row in rows],
            latencies=[row[1] for row in rows],
            statuses=[row[2] for row in rows],
            codes=[row[3] for row in rows],
            retry_after=[row[4] for row in rows],
            window=(data["window"][0], data["window"][1]),
            client_cpu_seconds=data["cpu"],
            transport_errors=data["errors"],
        )


# --- the load client, inside its process ------------------------------------------------------------


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool, str, bytes]:
    """One HTTP/1.1 answer with a Content-Length: status, whether the server closes, Retry-After, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close, retry_after = 0, False, ""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"retry-after":
            retry_after = value.strip().decode()
        elif name == b"transfer-encoding":
            raise ValueError("a chunked answer: not read by this client")
    return status, close, retry_after, await reader.readexactly(length) if length else b""


async def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    port, api_key, code = int(spec["port"]), str(spec["api_key"]), str(spec["code"])
    honor_retry_after = bool(spec.get("honor_retry_after"))
    head = f"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
    head += "Content-Type: application/json\r\n"
    requests = []
    for verification_id in spec["ids"]:
        body = json.dumps({"id": verification_id, "code": code}).encode()
        requests.append(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    turn = itertools.count()
    rows: list[tuple[float, float, int, str, str]] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + float(spec["warmup"])
    measure_until = measure_from + float(spec["seconds"])

    async def user() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (sent := time.perf_counter()) < measure_until:
            try:
                writer.write(requests[next(turn) % len(requests)])
                status, close, retry_after, body = await _read_answer(reader)
            except (OSError, ValueError, asyncio.IncompleteReadError):
                errors += 1
                close = True
            else:
                latency = time.perf_counter() - sent
                outcome = ACCEPTED
                if status != 200:
                    problem = json.loads(body).get("code", "?") if body else "?"
                    outcome = OVERLOADED if status == 503 and problem == OVERLOADED else f"{status} {problem}"
                rows.append((sent - started, latency, status, outcome, retry_after))
                if outcome == OVERLOADED and honor_retry_after:
                    await asyncio.sleep(float(retry_after or 1))
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    users = [asyncio.create_task(user()) for _ in range(int(spec["connections"]))]
    await asyncio.sleep(measure_from - time.perf_counter())
    cpu_from = os.times()
    print("measuring", flush=True)
    await asyncio.sleep(measure_until - time.perf_counter())
    cpu_until = os.times()
    print("done", flush=True)
    await asyncio.wait_for(asyncio.gather(*users), timeout=60)
    cpu = (cpu_until.user + cpu_until.system) - (cpu_from.user + cpu_from.system)
    return {
        "rows": rows,
        "window": [measure_from - started, measure_until - started],
        "cpu": cpu,
        "errors": errors,
    }


def _client_main() -> None:
    spec = json.loads(sys.stdin.readline())
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    with contextlib.suppress(ImportError):  # uvloop comes with the service; its loop is cheaper
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(_drive(spec))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:] != ["client"]:
        raise SystemExit("usage: python -m bench._serve client  (spec as one JSON line on stdin)")
    _client_main()
