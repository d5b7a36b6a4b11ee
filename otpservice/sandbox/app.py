"""The Autocall sandbox as a Litestar app: the provider's five endpoints plus ``/_sandbox/`` admin.

For development and tests only: the service mounts it in dev mode and tests; it must never be
mounted in production mode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request, Response, Router, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery

from otpservice.sandbox.config import (
    ConfigError,
    SandboxConfig,
    apply_config_patch,
    config_as_dict,
    reset_faults,
)
from otpservice.sandbox.errors import ProviderError, error_envelope
from otpservice.sandbox.numbers import national_form
from otpservice.sandbox.placement import place_calls
from otpservice.sandbox.simulator import CallSimulator
from otpservice.sandbox.state import SandboxState, TemplateExistsError

logger = logging.getLogger("otpservice.sandbox")

TOKEN_PATH = "/api/v1/users/generate_access_token"  # noqa: S105 (a path, not a password)
# A hung request ends when its client disconnects or the fault is turned off; this bounds the rest.
HANG_LIMIT_SECONDS = 300.0
_random = secrets.SystemRandom()

AnyRequest = Request[Any, Any, Any]


@dataclass(slots=True)
class Sandbox:
    """What the handlers share: the live config, the account state and the call simulator."""

    config: SandboxConfig
    state: SandboxState
    simulator: CallSimulator


def _sandbox(request: AnyRequest) -> Sandbox:
    sandbox: Sandbox = request.app.state["sandbox"]
    return sandbox


def _ok(data: Any) -> Response[Any]:
    return Response(content={"data": data}, status_code=200)


def _admin_ok(content: Any) -> Response[Any]:
    return Response(content=content, status_code=200)


async def _json_body(request: AnyRequest) -> object:
    try:
        return json.loads(await request.body())
    except ValueError as error:
        raise ProviderError(400, "the body must be valid JSON") from error


# --- the provider's endpoints -------------------------------------------------------------------


async def _provider_gate(request: AnyRequest) -> Response[Any] | None:
    """Inject the configured provider faults, then check the access token (except to get one)."""
    config = _sandbox(request).config
    faults = config.provider_faults
    if faults.latency_seconds > 0:
        await asyncio.sleep(faults.latency_seconds)
    if faults.hang:
        await _hold_until_released(request, config, lambda c: c.provider_faults.hang)
        return Response(content=error_envelope(503, "request held by hang fault"), status_code=503)
    if faults.error_rate > 0 and _random.random() < faults.error_rate:
        status = faults.error_status
        return Response(content=error_envelope(status, "injected provider fault"), status_code=status)
    if request.url.path != TOKEN_PATH:
        _authenticate(request)
    return None


async def _hold_until_released(
    request: AnyRequest, config: SandboxConfig, holding: Callable[[SandboxConfig], bool]
) -> None:
    """Keep the request open until its client disconnects or the fault holding it is turned off."""

    async def client_disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.create_task(client_disconnected())
    deadline = time.monotonic() + HANG_LIMIT_SECONDS
    try:
        # Polling the flag lets an in-process test (or the admin endpoint) release held requests.
        while holding(config) and not watcher.done() and time.monotonic() < deadline:
            await asyncio.wait({watcher}, timeout=0.05)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _authenticate(request: AnyRequest) -> None:
    header = request.headers.get("authorization", "").strip()
    if not header:
        raise ProviderError(401, "missing access token")
    scheme, _, rest = header.partition(" ")
    # The reference sends the raw token; a Bearer prefix (a past version of the docs) is accepted too.
    token = rest.strip() if scheme.lower() == "bearer" and rest else header
    if not _sandbox(request).state.token_is_valid(token):
        raise ProviderError(401, "invalid or expired access token")


@post(TOKEN_PATH)
async def generate_access_token(request: AnyRequest) -> Response[Any]:
    """Exchange a secret key for an access token."""
    sandbox = _sandbox(request)
    body = await _json_body(request)
    secret_key = body.get("secret_key") if isinstance(body, dict) else None
    if not isinstance(secret_key, str) or not secret_key:
        raise ProviderError(400, "secret_key is required")
    token = sandbox.state.issue_token(secret_key)
    if token is None:
        raise ProviderError(401, "invalid secret key")
    return _ok(
        {
            "id": secret_key,  # the reference's example echoes the key as the id
            "user_id": sandbox.state.user_id,
            "access_token": token,
            "refresh_token": "",
            "expire_at": int(sandbox.config.token_lifetime_seconds),
            "token_type": "Bearer",
            "scope": "member",
        }
    )


@post("/api/v2/campaigns/{campaign_id:str}/otp")
async def run_otp(request: AnyRequest, campaign_id: FromPath[str]) -> Response[Any]:
    """Place OTP calls."""
    sandbox = _sandbox(request)
    body = await _json_body(request)
    placed = place_calls(sandbox.state, sandbox.simulator, campaign_id, "OTP", body)
    if sandbox.config.provider_faults.lose_answer:
        await _hold_until_released(request, sandbox.config, lambda c: c.provider_faults.lose_answer)
        return Response(content=error_envelope(503, "answer held by lose_answer fault"), status_code=503)
    return _ok(placed)


@post("/api/v2/campaigns/{campaign_id:str}/voice")
async def run_tts(request: AnyRequest, campaign_id: FromPath[str]) -> Response[Any]:
    """Place text-to-speech calls."""
    sandbox = _sandbox(request)
    body = await _json_body(request)
    return _ok(place_calls(sandbox.state, sandbox.simulator, campaign_id, "TTS", body))


@post("/api/v2/campaigns/{campaign_id:str}/voice/import")
async def import_tts_voice(request: AnyRequest, campaign_id: FromPath[str]) -> Response[Any]:
    """Create a TTS template in the campaign."""
    state = _sandbox(request).state
    if campaign_id not in state.campaign_ids:
        raise ProviderError(404, f"campaign {campaign_id} not found")
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ProviderError(400, "the body must be a JSON object")
    name, content = body.get("name"), body.get("content")
    if not isinstance(name, str) or not name.strip():
        raise ProviderError(400, "name is required")
    if not isinstance(content, str) or not content.strip():
        raise ProviderError(400, "content is required")
    try:
        template = state.import_template(campaign_id, name, content)
    except TemplateExistsError as error:
        raise ProviderError(400, "template name already exists") from error
    return _ok(
        {
            "campaign_id": campaign_id,
            "name": template.name,
            "content": template.content,
            "keys": template.keys,
        }
    )


@get("/api/v2/report/{call_id:str}")
async def get_report(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """One call's detail record; status is "" and ended_at null until the call has ended."""
    call = _sandbox(request).state.call(call_id)
    if call is None:
        raise ProviderError(404, "call not found")
    return _ok(call.cdr())


# --- admin endpoints ----------------------------------------------------------------------------


@get("/calls")
async def list_calls(request: AnyRequest, phone: FromQuery[str | None] = None) -> Response[Any]:
    """Every call placed, optionally only those to ``phone`` (national or +84 form)."""
    calls = list(_sandbox(request).state.calls.values())
    if phone:
        wanted = national_form(phone)
        calls = [call for call in calls if call.phone_number == wanted]
    return _admin_ok({"calls": [call.summary() for call in calls]})


@get("/config")
async def show_config(request: AnyRequest) -> Response[Any]:
    """The live configuration."""
    return _admin_ok(config_as_dict(_sandbox(request).config))


@patch("/config")
async def change_config(request: AnyRequest) -> Response[Any]:
    """Change timings, callback shape or api-key placement, and faults; all or nothing."""
    config = _sandbox(request).config
    try:
        apply_config_patch(config, await _json_body(request))
    except ConfigError as error:
        raise ProviderError(400, str(error)) from error
    return _admin_ok(config_as_dict(config))


@post("/tokens/expire")
async def expire_tokens(request: AnyRequest) -> Response[Any]:
    """Expire every access token now."""
    return _admin_ok({"expired": _sandbox(request).state.expire_tokens()})


@post("/callbacks/flush")
async def flush_callbacks(request: AnyRequest) -> Response[Any]:
    """Deliver the callbacks held by the reorder fault, newest first."""
    return _admin_ok({"released": await _sandbox(request).simulator.flush()})


@post("/calls/{call_id:str}/callback")
async def resend_callback(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """Post an ended call's callback again, now."""
    sandbox = _sandbox(request)
    call = sandbox.state.call(call_id)
    if call is None:
        raise ProviderError(404, "call not found")
    if not call.callback_url:
        raise ProviderError(400, "the call has no callback_url")
    if not call.status:
        raise ProviderError(409, "the call has not ended")
    attempt = await sandbox.simulator.send_callback(call)
    return _admin_ok({"delivery": attempt.as_json()})


@post("/reset")
async def reset(request: AnyRequest) -> Response[Any]:
    """Forget calls and imported templates, turn faults off; keep the seed and issued tokens."""
    sandbox = _sandbox(request)
    await sandbox.simulator.cancel_all()
    sandbox.state.reseed()
    reset_faults(sandbox.config)
    return _admin_ok({"reset": True})


# --- the app ------------------------------------------------------------------------------------


def _error_response(request: AnyRequest, error: Exception) -> Response[Any]:
    if isinstance(error, ProviderError):
        status, detail = error.status_code, error.detail
    elif isinstance(error, HTTPException):
        status, detail = error.status_code, str(error.detail)
    else:
        logger.exception("sandbox error on %s %s", request.method, request.url.path)
        status, detail = 500, "internal error"
    return Response(content=error_envelope(status, detail), status_code=status)


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    sandbox: Sandbox = app.state["sandbox"]
    async with sandbox.simulator:
        yield


def create_sandbox_app(config: SandboxConfig | None = None, tls: ssl.SSLContext | None = None) -> Litestar:
    """The sandbox app around ``config`` (kept live: changing it changes the running sandbox)."""
    config = config or SandboxConfig()
    sandbox = Sandbox(config, SandboxState(config), CallSimulator(config, tls))
    provider = Router(
        path="/",
        route_handlers=[generate_access_token, run_otp, run_tts, import_tts_voice, get_report],
        before_request=_provider_gate,
    )
    admin = Router(
        path="/_sandbox",
        route_handlers=[
            list_calls,
            show_config,
            change_config,
            expire_tokens,
            flush_callbacks,
            resend_callback,
            reset,
        ],
    )
    return Litestar(
        route_handlers=[provider, admin],
        state=State({"sandbox": sandbox}),
        lifespan=[_lifespan],
        exception_handlers={Exception: _error_response},
        debug=False,
        logging_config=None,
        openapi_config=None,
    )
