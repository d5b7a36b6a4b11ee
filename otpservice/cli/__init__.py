"""The ``otpservice`` command: the service, dev mode, the Autocall sandbox and operator tools."""

from __future__ import annotations

import click

from otpservice.cli.autocall import autocall_group
from otpservice.cli.sandbox import sandbox_command
from otpservice.cli.service import dev_command, openapi_command, serve_command
from otpservice.cli.tenants import tenants_group
from otpservice.cli.webhooks import webhooks_group


@click.group()
@click.version_option(package_name="otpservice")
def main() -> None:
    """Voice OTP verification over TEL4VN Autocall."""


main.add_command(serve_command)
main.add_command(dev_command)
main.add_command(openapi_command)
main.add_command(sandbox_command)
main.add_command(autocall_group)
main.add_command(tenants_group)
main.add_command(webhooks_group)
