"""What must hold of the stored verifications whatever failed: read straight from Redis."""

from __future__ import annotations

import time
from typing import Any

from otpservice.adapters.storage import keys
from tests.support.redis_servers import sync_client
from tests.support.service import ServiceHandle


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stranded(redis: Any) -> list[str]:
    """Every broken promise in the store, as one line each (empty when all hold).

    - a pending verification always accepts a code (it has a hash);
    - its judged wrong codes plus attempts in flight never exceed its limit;
    - a placement not yet resolved is on its shard's schedule, or recorded as unknown;
    - a call still ringing as far as we know is on the schedule, so its outcome will be asked for.
    """
    problems = []
    scheduled: set[str] = set()
    for shard in range(keys.SHARDS):
        scheduled |= {_text(m) for m in redis.zrange(keys.call_schedule_key(shard), 0, -1)}
    for raw_key in redis.scan_iter(match="otp:{s*}:vf_*", count=1000):
        key = _text(raw_key)
        vid = key.rsplit(":", 1)[1]
        record = {_text(k): _text(v) for k, v in redis.hgetall(key).items()}
        if not record:
            continue
        if record["st"] == "pending":
            if not record.get("hc") and not record.get("nc"):
                problems.append(f"{vid}: pending without a code hash")
            in_flight = sum(1 for field in record if field.startswith("r:"))
            if int(record.get("fl", 0)) + in_flight > int(record["ma"]):
                problems.append(f"{vid}: more attempts than allowed ({record.get('fl', 0)} + {in_flight})")
        unresolved = record.get("ns")
        if unresolved and keys.scheduled_call(vid, int(unresolved)) not in scheduled:
            settled = record.get("ds") == unresolved and record.get("dst") == "unknown"
            if not settled:
                problems.append(f"{vid}: placement of send {unresolved} unresolved and untracked")
        if record.get("dst") == "calling" and keys.scheduled_call(vid, int(record["ds"])) not in scheduled:
            problems.append(f"{vid}: call {record['ds']} ringing but untracked")
    return problems


def stranded_after_settling(redis_url: str, service: ServiceHandle, timeout: float = 15.0) -> list[str]:
    """What is still stranded once repairs had ``timeout`` seconds to land (empty when all settled).

    The service clock moves on meanwhile, so placement deadlines pass and the reconciler acts.
    """
    redis = sync_client(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            service.clock.advance(1)
            problems = stranded(redis)
            if not problems or time.monotonic() > deadline:
                return problems
            time.sleep(0.1)
    finally:
        redis.close()
