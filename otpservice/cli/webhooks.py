"""``otpservice webhooks failed | retry``: see and resend dead-lettered webhook events.

Reads ``OTP_REDIS_URL`` (or ``OTP_REDIS_URL_FILE``) like the service. Output is JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import click

from otpservice.adapters.storage.clock import CLOCK_KEY
from otpservice.adapters.storage.connection import connect
from otpservice.adapters.storage.outbox import EventOutbox
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain.clock import to_iso
from otpservice.logs import configure_logging
from otpservice.redis_url import parse_redis_url
from otpservice.settings import Settings, SettingsError


@click.group("webhooks")
def webhooks_group() -> None:
    """Dead-lettered webhook events: list them, send them again."""
    configure_logging("CRITICAL", json=False)


@webhooks_group.command("failed")
def failed_command() -> None:
    """List dead-lettered events: id, type, verification id, tenant, last error, tries."""

    async def work(outbox: EventOutbox, _storage: Storage) -> None:
        for letter in await outbox.dead_letters():
            event = letter.event
            line = {
                "id": event.webhook_id,
                "type": event.type,
                "verification_id": event.verification.id,
                "tenant": event.tenant,
                "last_error": letter.last_error,
                "tries": event.tries,
                "recorded_at": to_iso(event.at),
                "dead_since": to_iso(letter.died_at),
            }
            click.echo(json.dumps(line))

    _run(work)


@webhooks_group.command("retry")
@click.argument("event_id", required=False)
@click.option("--all", "every", is_flag=True, help="Every dead-lettered event.")
def retry_command(event_id: str | None, every: bool) -> None:
    """Send dead-lettered events again: EVENT_ID (as `failed` lists it), or --all."""
    if bool(event_id) == every:
        raise click.UsageError("give one EVENT_ID or --all")

    async def work(outbox: EventOutbox, storage: Storage) -> None:
        # the storage server's clock, which the dispatchers schedule by (see adapters/storage/clock.py)
        now = datetime.fromtimestamp(await storage.server_time(CLOCK_KEY), UTC)
        revived = await outbox.revive(now, event_id)
        if event_id and not revived:
            raise click.ClickException(f"no dead-lettered event {event_id}")
        for webhook_id in revived:
            click.echo(json.dumps({"id": webhook_id, "requeued": True}))

    _run(work)


def _run(work: Callable[[EventOutbox, Storage], Awaitable[None]]) -> None:
    try:
        settings = Settings.from_env(mode="dev")
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    if not settings.redis_url:
        raise click.ClickException("OTP_REDIS_URL is required")

    async def main() -> None:
        client = connect(parse_redis_url(settings.redis_url), timeout_seconds=settings.redis_timeout_seconds)
        storage = Storage(client, operation_timeout_seconds=settings.storage_bound_seconds)
        try:
            await work(EventOutbox(storage), storage)
        finally:
            await storage.close()

    asyncio.run(main())
