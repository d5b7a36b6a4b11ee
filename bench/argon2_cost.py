"""What one code hash and one check cost with the configured argon2id parameters.

Run: make bench  (or: .venv/bin/python -m bench.argon2_cost [--rounds N])
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from otpservice.domain.codes import CodeHasher, generate_code
from otpservice.settings import Argon2Settings


@dataclass
class Argon2Cost:
    """One hash and one check (ms), and checks per second in 1, 2, 4 threads, back to back."""

    time_cost: int
    memory_cost_kib: int
    parallelism: int
    hash_ms: list[float]
    check_ms: list[float]
    checks_per_second: dict[int, float]

    @property
    def hash_p50(self) -> float:
        return statistics.median(self.hash_ms)

    @property
    def check_p50(self) -> float:
        return statistics.median(self.check_ms)


def measure(
    rounds: int = 50, params: Argon2Settings | None = None, threads: tuple[int, ...] = (1, 2, 4)
) -> Argon2Cost:
    params = params or Argon2Settings()
    hasher = CodeHasher(b"benchmark-pepper-" + b"x" * 32, params)
    code = generate_code(6)
    encoded = hasher.hash("vf_bench", code)
    hash_ms, check_ms = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        hasher.hash("vf_bench", code)
        hash_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        assert hasher.matches("vf_bench", code, encoded)
        check_ms.append((time.perf_counter() - started) * 1000)
    rates = {}
    for workers in threads:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            started = time.perf_counter()
            list(pool.map(lambda _: hasher.matches("vf_bench", code, encoded), range(rounds)))
            elapsed = time.perf_counter() - started
        rates[workers] = rounds / elapsed
    return Argon2Cost(params.time_cost, params.memory_cost_kib, params.parallelism, hash_ms, check_ms, rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--time-cost", type=int, default=Argon2Settings().time_cost)
    parser.add_argument("--memory-kib", type=int, default=Argon2Settings().memory_cost_kib)
    args = parser.parse_args()
    params = Argon2Settings(time_cost=args.time_cost, memory_cost_kib=args.memory_kib, parallelism=1)
    cost = measure(args.rounds, params)
    print(f"argon2id m={cost.memory_cost_kib} KiB t={cost.time_cost} p={cost.parallelism}")
    print(f"  hash : median {cost.hash_p50:.1f} ms, p95 {_p95(cost.hash_ms):.1f} ms")
    print(f"  check: median {cost.check_p50:.1f} ms, p95 {_p95(cost.check_ms):.1f} ms")
    for workers, rate in cost.checks_per_second.items():
        print(f"  checks/s with {workers} thread(s): {rate:.0f}")


def _p95(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.95) - 1]


if __name__ == "__main__":
    main()
