"""A pending verification fits in 400 bytes of Redis memory with the default settings, as a listpack.

MEMORY USAGE counts what the allocator holds, and that depends a little on the order of the writes
that built a record: the same record measures 368 bytes when restored from a DUMP, and 368 to 400
when built by the service's scripts (about one record in five carries 16-32 bytes of allocator
slack: 467 of 600 at 368, 122 at 384, 11 at 400). Every record is held to 400, and its own bytes
(a DUMP restored) to 368, so that a field grown by a few bytes fails here before it fails in use.
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
            assert usage <= 400, f"{vid}: {usage} bytes"
            usages.append(usage)
            copy = f"{key}:copy"
            dumped = redis.dump(key)
            assert dumped is not None
            redis.restore(copy, 0, dumped)
            own = redis.memory_usage(copy)
            redis.delete(copy)
            assert own is not None
            assert own <= 368, f"{vid}: {own} bytes of its own"
    finally:
        redis.close()
    assert statistics.median(usages) <= 384, usages
