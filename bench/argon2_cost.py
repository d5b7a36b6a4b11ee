"""What one code hash and one check cost with the configured argon2id parameters.

Run: make bench  (or: .venv/bin/python -m bench.argon2_cost [--rounds N])
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from otpservice.domain.codes import CodeHasher, generate_code
from otpservice.settings import Argon2Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--time-cost", type=int, default=Argon2Settings().time_cost)
    parser.add_argument("--memory-kib", type=int, default=Argon2Settings().memory_cost_kib)
    args = parser.parse_args()
    params = Argon2Settings(time_cost=args.time_cost, memory_cost_kib=args.memory_kib, parallelism=1)
    hasher = CodeHasher(b"benchmark-pepper-" + b"x" * 32, params)
    code = generate_code(6)
    encoded = hasher.hash("vf_bench", code)
    hash_ms, check_ms = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        hasher.hash("vf_bench", code)
        hash_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        assert hasher.matches("vf_bench", code, encoded)
        check_ms.append((time.perf_counter() - started) * 1000)
    print(f"argon2id m={params.memory_cost_kib} KiB t={params.time_cost} p={params.parallelism}")
    print(f"  hash : median {statistics.median(hash_ms):.1f} ms, p95 {_p95(hash_ms):.1f} ms")
    print(f"  check: median {statistics.median(check_ms):.1f} ms, p95 {_p95(check_ms):.1f} ms")
    for workers in (1, 2, 4):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            started = time.perf_counter()
            list(pool.map(lambda _: hasher.matches("vf_bench", code, encoded), range(args.rounds)))
            elapsed = time.perf_counter() - started
        print(f"  checks/s with {workers} thread(s): {args.rounds / elapsed:.0f}")


def _p95(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.95) - 1]


if __name__ == "__main__":
    main()
