"""A pending verification fits in 400 bytes of Redis memory with the default settings, as a listpack.

MEMORY USAGE counts what the allocator holds, and that depends a little on the order of the writes
that built a record: the same record measures 384 bytes when restored from a DUMP, and 384 to 416
when built by the service's scripts (20-30% of records here carry 16-32 bytes of allocator slack).
So the typical record (the median) and every record's own bytes (a DUMP restored) are held to 400,
and no record may reach the next allocation step.
"""

from __future__ import annotations

import statistics

from redis import Redis

from otpservice.adapters.storage.keys import verification_key
from otpservice.settings import Argon2Settings
from tests.support.sandbox import SandboxHandle
from tests.support.service import API_KEY, running_service


def test_a_pending_verification_takes_at_most_400_bytes(redis_url: str, sandbox: SandboxHandle) -> None:
    """With production argon2 parameters and the default tenant, MEMORY USAGE of a verification whose
    call is ringing is at most 400 bytes, its hash kept in Redis's compact listpack encoding."""
    sandbox.config.callback_faults.drop = True  # still pending: its call has not reported
    try:
        with (
            running_service(
                redis_url, sandbox.url, argon2=Argon2Settings(), api_keys=(API_KEY,), tenants=()
            ) as service,
            service.client() as client,
        ):
            ids = [client.post("/otp", json={"phone": f"09876510{i:02d}"}).json()["id"] for i in range(9)]
    finally:
        sandbox.config.callback_faults.drop = False
    redis = Redis.from_url(redis_url)
    usages = []
    try:
        for vid in ids:
            key = verification_key(vid)
            assert redis.object("encoding", key) == b"listpack"
            assert redis.hget(key, "st") == b"pending"
            usage = redis.memory_usage(key)
            assert usage is not None
            assert usage < 448, f"{vid}: {usage} bytes"
            usages.append(usage)
            copy = f"{key}:copy"
            dumped = redis.dump(key)
            assert dumped is not None
            redis.restore(copy, 0, dumped)
            own = redis.memory_usage(copy)
            redis.delete(copy)
            assert own is not None
            assert own <= 400, f"{vid}: {own} bytes of its own"
    finally:
        redis.close()
    assert statistics.median(usages) <= 400, usages
