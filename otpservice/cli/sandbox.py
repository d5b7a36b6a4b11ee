"""``otpservice sandbox``: run the Autocall emulator on its own."""

from __future__ import annotations

import click


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
def sandbox_command(host: str, port: int) -> None:
    """Serve the Autocall sandbox."""
    raise click.ClickException("not built yet")
