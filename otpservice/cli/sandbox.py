"""``otpservice sandbox``: run the Autocall emulator on its own."""

from __future__ import annotations

import logging

import click

from otpservice.sandbox.config import (
    CALLBACK_APIKEY_PLACEMENTS,
    CALLBACK_SHAPES,
    CallbackFaults,
    ConfigError,
    ProviderFaults,
    SandboxConfig,
    validate_config,
)


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--ring-seconds", default=2.0, show_default=True, help="How long each call rings.")
@click.option("--talk-seconds", default=4.0, show_default=True, help="How long answered calls talk.")
@click.option("--token-lifetime", default=15552000.0, show_default=True, help="Access token lifetime (s).")
@click.option("--callback-shape", type=click.Choice(CALLBACK_SHAPES), default="cdr", show_default=True)
@click.option(
    "--callback-apikey-in",
    type=click.Choice(CALLBACK_APIKEY_PLACEMENTS),
    default="authorization",
    show_default=True,
    help="Where callbacks carry the request's callback_apikey.",
)
@click.option("--latency", default=0.0, show_default=True, help="Seconds added to every API answer.")
@click.option("--error-rate", default=0.0, show_default=True, help="Fraction of API requests that fail.")
@click.option("--error-status", default=503, show_default=True, help="Status of injected API errors.")
@click.option("--hang", is_flag=True, help="Never answer API requests (until the client gives up).")
@click.option(
    "--lose-answer", is_flag=True, help="Place OTP calls, then never answer (until the client gives up)."
)
@click.option("--drop-callbacks", is_flag=True, help="Never post callbacks.")
@click.option("--duplicate-callbacks", default=0, show_default=True, help="Extra copies of each callback.")
@click.option("--callback-delay", default=0.0, show_default=True, help="Seconds before each callback.")
@click.option(
    "--reorder-callbacks", is_flag=True, help="Hold callbacks until POST /_sandbox/callbacks/flush."
)
@click.option("--log-spoken-text/--no-log-spoken-text", default=True, show_default=True)
def sandbox_command(
    host: str,
    port: int,
    ring_seconds: float,
    talk_seconds: float,
    token_lifetime: float,
    callback_shape: str,
    callback_apikey_in: str,
    latency: float,
    error_rate: float,
    error_status: int,
    hang: bool,
    lose_answer: bool,
    drop_callbacks: bool,
    duplicate_callbacks: int,
    callback_delay: float,
    reorder_callbacks: bool,
    log_spoken_text: bool,
) -> None:
    """Serve the Autocall sandbox (a development emulator of the provider; never use in production)."""
    import uvicorn

    from otpservice.sandbox.app import create_sandbox_app

    config = SandboxConfig(
        token_lifetime_seconds=token_lifetime,
        ring_seconds=ring_seconds,
        talk_seconds=talk_seconds,
        callback_shape=callback_shape,  # type: ignore[arg-type]  # click.Choice checked it
        callback_apikey_in=callback_apikey_in,  # type: ignore[arg-type]
        provider_faults=ProviderFaults(latency, error_rate, error_status, hang, lose_answer),
        callback_faults=CallbackFaults(
            drop_callbacks, duplicate_callbacks, callback_delay, reorder_callbacks
        ),
        log_spoken_text=log_spoken_text,
    )
    try:
        validate_config(config)
    except ConfigError as error:
        raise click.BadParameter(str(error)) from error
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A bounded graceful shutdown ends requests still held by the hang fault.
    uvicorn.run(create_sandbox_app(config), host=host, port=port, timeout_graceful_shutdown=2)
