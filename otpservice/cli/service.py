"""``otpservice serve | dev | openapi``: run the verification service."""

from __future__ import annotations

import click


@click.command("serve")
def serve_command() -> None:
    """Run the service in production mode (settings from the environment)."""
    raise click.ClickException("not built yet")


@click.command("dev")
def dev_command() -> None:
    """Run the service with an embedded Redis-compatible server and the Autocall sandbox."""
    raise click.ClickException("not built yet")


@click.command("openapi")
def openapi_command() -> None:
    """Print the OpenAPI document generated from the app, as YAML."""
    raise click.ClickException("not built yet")
