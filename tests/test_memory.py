"""A pending verification fits in 400 bytes of Redis memory with the default settings, as a listpack."""

from __future__ import annotations

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
            ids = [client.post("/otp", json={"phone": f"09876510{i:02d}"}).json()["id"] for i in range(5)]
    finally:
        sandbox.config.callback_faults.drop = False
    redis = Redis.from_url(redis_url)
    try:
        for vid in ids:
            key = verification_key(vid)
            assert redis.object("encoding", key) == b"listpack"
            assert redis.hget(key, "st") == b"pending"
            usage = redis.memory_usage(key)
            assert usage is not None
            assert usage <= 400, f"{vid}: {usage} bytes"
    finally:
        redis.close()
