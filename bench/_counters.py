"""Readings taken before and after a measured window: a server process's CPU time (from /proc), the
Redis-compatible server's own CPU time and its commands by name (INFO cpu, INFO commandstats; the
commands Lua scripts call are counted too)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from bench._serve import cpu_seconds


@dataclass(frozen=True)
class Reading:
    """CPU seconds of a process (all its threads), of Valkey, and Valkey's commands so far by name."""

    process_cpu: float
    valkey_cpu: float
    calls: dict[str, int]

    def commands_since(self, start: Reading) -> dict[str, int]:
        """Commands run between ``start`` and this reading, by name (INFO itself left out)."""
        return {
            name: count - start.calls.get(name, 0)
            for name, count in self.calls.items()
            if name != "info" and count - start.calls.get(name, 0) > 0
        }


def read_counters(pid: int, store: redis.Redis) -> Reading:
    cpu = store.info("cpu")
    stats = store.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    valkey = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return Reading(cpu_seconds(pid), valkey, calls)


def valkey_version(store: redis.Redis) -> str:
    info = store.info("server")
    return str(info.get("valkey_version", info["redis_version"]))
