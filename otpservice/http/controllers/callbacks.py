"""The provider's call-ended callback: authenticated by a per-call credential, read in any shape."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.params import PathParameter

from otpservice.adapters.autocall.callback import MalformedCallback, body_api_key, parse_callback
from otpservice.http.auth import bearer_token
from otpservice.http.dependencies import Deliveries
from otpservice.http.problems import problem
from otpservice.http.schemas import CallbackAck, VerificationIdInPath, problem_responses

_KEY_HEADERS = ("x-api-key", "apikey", "api-key", "x-apikey")


def _presented_credentials(request: Request[Any, Any, Any], in_path: str | None, body: object) -> list[str]:
    """Every place the provider might have put ``callback_apikey``, plus the URL's own credential."""
    authorization = request.headers.get("authorization", "")
    candidates = [in_path or "", bearer_token(authorization) or authorization, body_api_key(body) or ""]
    candidates += [request.headers.get(name, "") for name in _KEY_HEADERS]
    return [c for c in candidates if c]


SendNumber = Annotated[int, PathParameter(ge=1, le=1000, description="Which call of the verification")]
Credential = Annotated[str | None, PathParameter(min_length=1, max_length=128)]


@post(
    [
        "/callbacks/autocall/{verification_id:str}/{send:int}/{credential:str}",
        "/callbacks/autocall/{verification_id:str}/{send:int}",
    ],
    status_code=200,
    tags=["provider callbacks"],
    responses=problem_responses(400, 401, 404, 422, 503),
    summary="Autocall call-ended callback",
    description="The credential travels in the URL we give the provider, or as callback_apikey anywhere.",
)
async def autocall_callback(
    request: Request[Any, Any, Any],
    deliveries: Deliveries,
    verification_id: VerificationIdInPath,
    send: SendNumber,
    credential: Credential = None,
) -> CallbackAck:
    """Record a call's outcome reported by the provider; forged or unreadable ones change nothing."""
    raw = await request.body()
    try:
        body: object = msgspec.json.decode(raw) if raw else None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # too deep or not UTF-8: unreadable
        body = None
    deliveries.authenticate_callback(verification_id, send, _presented_credentials(request, credential, body))
    try:
        report = parse_callback(body)
    except MalformedCallback as exc:
        raise problem(422, "invalid_callback", "Unreadable callback", str(exc)) from exc
    result = await deliveries.record_callback(verification_id, send, report)
    return CallbackAck(outcome=result.outcome, verification_id=result.verification_id)
