"""``otpservice autocall ...``: operator commands against a real or sandbox Autocall account."""

from __future__ import annotations

import click


@click.group("autocall")
def autocall_group() -> None:
    """Talk to the Autocall API with the service's own settings; print JSON."""
