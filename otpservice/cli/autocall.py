"""``otpservice autocall ...``: operator commands against a real or sandbox Autocall account.

Configured by the service's own ``OTP_AUTOCALL_*`` variables (read in dev mode, so nothing else is
required). Results are JSON on stdout; a failure is one JSON object ``{"error", "message", ...}`` on
stderr with exit status 1. Client logs go to stderr only with ``--verbose``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click

from otpservice.adapters.autocall import AutocallClient, AutocallError, CallPlacement, create_http_client
from otpservice.adapters.autocall.masking import mask_secret
from otpservice.logs import configure_logging
from otpservice.settings import AutocallSettings, Settings, SettingsError

OTP_TEMPLATE_CONTENT = (
    "Mã xác thực của bạn là {{code_otp}}. Xin nhắc lại, mã xác thực của bạn là {{code_otp}}."
)
_HIDDEN = "[hidden: --show-code]"

Json = dict[str, object]


@click.group("autocall")
@click.option("-v", "--verbose", is_flag=True, help="Log the client's requests (masked) to stderr.")
def autocall_group(verbose: bool) -> None:
    """Talk to the Autocall API with the service's own settings; print JSON."""
    configure_logging("INFO" if verbose else "CRITICAL", json=False)


@autocall_group.command("token")
@click.option("--show", is_flag=True, help="Print the whole token instead of a masked one.")
def token_command(show: bool) -> None:
    """Obtain an access token and print its lifetime."""

    async def work(client: AutocallClient) -> Json:
        token = await client.get_token()
        return {
            "token": token.value if show else mask_secret(token.value),
            "lifetime_seconds": token.lifetime_seconds,
        }

    _run(work)


@autocall_group.command("import-template")
@click.argument("name")
@click.option("--content", help="The script; {{key}} placeholders become its key fields.")
@click.option(
    "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Read it here."
)
@click.option(
    "--otp-default", is_flag=True, help="The standard Vietnamese OTP script reading {{code_otp}} twice."
)
def import_template_command(name: str, content: str | None, path: Path | None, otp_default: bool) -> None:
    """Create a TTS template NAME in the configured campaign."""
    if sum((content is not None, path is not None, otp_default)) != 1:
        raise click.UsageError("give exactly one of --content, --file, --otp-default")
    text = (
        content if content is not None else path.read_text(encoding="utf-8") if path else OTP_TEMPLATE_CONTENT
    )

    async def work(client: AutocallClient) -> Json:
        imported = await client.import_template(name, text)
        return {"name": imported.name, "response": imported.raw}

    _run(work)


@autocall_group.command("call-otp")
@click.argument("phone")
@click.option("--code", required=True, help="The code the call reads out.")
@click.option("--template", help="OTP template name [default: OTP_AUTOCALL_TEMPLATE].")
@click.option("--callback-url")
@click.option("--callback-apikey")
def call_otp_command(
    phone: str, code: str, template: str | None, callback_url: str | None, callback_apikey: str | None
) -> None:
    """Place an OTP call to PHONE (national format, 0xxxxxxxxx)."""
    template_name = template or _settings().template

    async def work(client: AutocallClient) -> Json:
        placement = await client.place_otp_call(
            [phone],
            code=code,
            template_name=template_name,
            callback_url=callback_url,
            callback_apikey=callback_apikey,
        )
        return _placement_json(placement)

    _run(work)


@autocall_group.command("call-tts")
@click.argument("phones", metavar="PHONE...", nargs=-1, required=True)
@click.option("--template", required=True, help="TTS template name.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A key field; repeat for each.")
@click.option("--callback-url")
@click.option("--callback-apikey")
def call_tts_command(
    phones: tuple[str, ...],
    template: str,
    params: tuple[str, ...],
    callback_url: str | None,
    callback_apikey: str | None,
) -> None:
    """Place a text-to-speech call to each PHONE."""
    fields = {}
    for param in params:
        key, separator, value = param.partition("=")
        if not separator or not key:
            raise click.BadParameter(f"{param!r} is not KEY=VALUE", param_hint="--param")
        fields[key] = value

    async def work(client: AutocallClient) -> Json:
        placement = await client.place_tts_call(
            phones,
            template_name=template,
            params=fields,
            callback_url=callback_url,
            callback_apikey=callback_apikey,
        )
        return _placement_json(placement)

    _run(work)


@autocall_group.command("cdr")
@click.argument("call_id")
@click.option("--show-code", is_flag=True, help="Print the OTP code the call read instead of hiding it.")
def cdr_command(call_id: str, show_code: bool) -> None:
    """Print the call detail record of CALL_ID."""

    async def work(client: AutocallClient) -> Json:
        report = await client.get_report(call_id)
        cdr = asdict(report)
        if not show_code:
            cdr["code_otp"] = _HIDDEN if report.code_otp else None
            cdr["params"] = {k: _HIDDEN if k == "code_otp" else v for k, v in report.params.items()}
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in cdr.items()}

    _run(work)


def _placement_json(placement: CallPlacement) -> Json:
    return {
        "campaign_id": placement.campaign_id,
        "accepted": list(placement.accepted),
        "rejected": [{"phone": r.phone, "reason": r.reason} for r in placement.rejected],
    }


def _settings() -> AutocallSettings:
    try:
        return Settings.from_env(mode="dev").autocall
    except SettingsError as error:
        _fail({"error": "SettingsError", "message": str(error)})


def _run(work: Callable[[AutocallClient], Awaitable[Json]]) -> None:
    """Run one command on a fresh pool; print its JSON, or the failure as JSON on stderr."""
    settings = _settings()

    async def main() -> Json:
        async with create_http_client(settings) as http:
            return await work(AutocallClient.from_settings(settings, http))

    try:
        result = asyncio.run(main())
    except AutocallError as error:
        failure: Json = {"error": type(error).__name__, "message": str(error)}
        for detail in ("status_code", "request_may_have_reached_provider"):
            if hasattr(error, detail):
                failure[detail] = getattr(error, detail)
        _fail(failure)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


def _fail(failure: Json) -> NoReturn:
    click.echo(json.dumps(failure, ensure_ascii=False), err=True)
    raise SystemExit(1)
