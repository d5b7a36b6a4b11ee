"""``otpservice tenants ...``: operator tools for the tenants file named by ``OTP_TENANTS_FILE``."""

from __future__ import annotations

import sys

import click

from otpservice.tenants import hash_api_key


@click.group("tenants")
def tenants_group() -> None:
    """Prepare entries of the tenants file (OTP_TENANTS_FILE)."""


@tenants_group.command("hash-key")
@click.option("--key", help="The API key [default: read from standard input, off the shell history].")
def hash_key_command(key: str | None) -> None:
    """Print the sha256:<hex> line that stands for an API key in a tenant's api_keys."""
    if key is None:
        # On a terminal, ask without echoing the key; piped, take the whole input.
        key = click.prompt("API key", hide_input=True, err=True) if sys.stdin.isatty() else sys.stdin.read()
    key = key.strip()
    if not key:
        raise click.UsageError("the key is empty: pass --key or write it to standard input")
    if "\n" in key:
        raise click.UsageError("the key spans several lines: give one key at a time")
    click.echo(hash_api_key(key))
