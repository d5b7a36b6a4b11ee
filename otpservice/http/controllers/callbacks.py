"""The provider's call-ended callback: authenticated by a per-call credential, read in any shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

import msgspec
from litestar import Request, Router, post
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Reference, RequestBody, Schema
from litestar.params import PathParameter

from otpservice.adapters.autocall.callback import MalformedCallback, body_api_key, parse_callback
from otpservice.http.auth import bearer_token
from otpservice.http.dependencies import Deliveries
from otpservice.http.problems import problem
from otpservice.http.schemas import (
    INVALID_CALLBACK,
    INVALID_CALLBACK_CREDENTIALS,
    NOT_FOUND,
    REQUEST_TOO_LARGE,
    STORAGE_UNAVAILABLE,
    VALIDATION_ERROR,
    CallbackAck,
    CallbackOutcome,
    DocumentedOperation,
    VerificationIdInPath,
    problem_answers,
)

_KEY_HEADERS = ("x-api-key", "apikey", "api-key", "x-apikey")


def _presented_credentials(request: Request[Any, Any, Any], in_path: str | None, body: object) -> list[str]:
    """Every place the provider might have put ``callback_apikey``, plus the URL's own credential."""
    authorization = request.headers.get("authorization", "")
    candidates = [in_path or "", bearer_token(authorization) or authorization, body_api_key(body) or ""]
    candidates += [request.headers.get(name, "") for name in _KEY_HEADERS]
    return [c for c in candidates if c]


SEND_RANGE = range(1, 1001)
SendNumber = Annotated[
    int,
    PathParameter(ge=SEND_RANGE.start, le=SEND_RANGE.stop - 1, description="Which call of the verification"),
]
Credential = Annotated[
    str,
    PathParameter(
        min_length=1, max_length=128, description="The call's credential, as given to the provider"
    ),
]
_TEXT = Schema(type=OpenAPIType.STRING)
_CALL_REPORT: dict[str, Schema | Reference] = {
    "id": _TEXT,
    "call_id": _TEXT,
    "status": Schema(type=OpenAPIType.STRING, description="The provider's word, in any case"),
    "duration": Schema(type=[OpenAPIType.INTEGER, OpenAPIType.STRING], description="Seconds talked"),
    "callback_apikey": _TEXT,
}


@dataclass
class _CallbackOperation(DocumentedOperation):
    """The handler reads its body itself (the provider documents no format): the body is described
    here, as the shapes :func:`parse_callback` reads."""

    def __post_init__(self) -> None:
        super().__post_init__()
        report = Schema(type=OpenAPIType.OBJECT, properties=_CALL_REPORT)
        body = Schema(
            type=OpenAPIType.OBJECT,
            properties={**_CALL_REPORT, "data": report},
            description="A call report: the call's id (id or call_id) and status, bare or inside data; "
            "anything else is 422 invalid_callback",
        )
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=body)}, required=False
        )


_DOCUMENTATION: dict[str, Any] = {
    "status_code": 200,
    "tags": ["provider callbacks"],
    "operation_class": _CallbackOperation,
    "responses": problem_answers(
        INVALID_CALLBACK_CREDENTIALS,
        NOT_FOUND,
        REQUEST_TOO_LARGE,
        VALIDATION_ERROR,
        INVALID_CALLBACK,
        STORAGE_UNAVAILABLE,
    ),
    "summary": "Autocall call-ended callback",
    "response_description": "what the callback changed",
}


@post(
    "/{verification_id:str}/{send:int}/{credential:str}",
    description="The URL given to the provider; the credential may also come as callback_apikey anywhere.",
    **_DOCUMENTATION,
)
async def with_credential_in_url(
    request: Request[Any, Any, Any],
    deliveries: Deliveries,
    verification_id: VerificationIdInPath,
    send: SendNumber,
    credential: Credential,
) -> CallbackAck:
    """Record a call's outcome reported by the provider; forged or unreadable ones change nothing."""
    return await _record(request, deliveries, verification_id, send, credential)


@post(
    "/{verification_id:str}/{send:int}",
    description="For a provider that sends callback_apikey in a header or the body instead of the URL.",
    **_DOCUMENTATION,
)
async def with_credential_elsewhere(
    request: Request[Any, Any, Any],
    deliveries: Deliveries,
    verification_id: VerificationIdInPath,
    send: SendNumber,
) -> CallbackAck:
    """Record a call's outcome whose credential travels outside the URL."""
    return await _record(request, deliveries, verification_id, send, None)


async def _record(
    request: Request[Any, Any, Any],
    deliveries: Deliveries,
    verification_id: str,
    send: int,
    credential: str | None,
) -> CallbackAck:
    if send not in SEND_RANGE:  # Litestar applies no bounds to a path parameter the route types itself
        raise problem(
            422,
            "validation_error",
            "Invalid request",
            "invalid value for: send",
            errors=[
                {"field": "send", "message": f"must be from {SEND_RANGE.start} to {SEND_RANGE.stop - 1}"}
            ],
        )
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
    return CallbackAck(outcome=cast(CallbackOutcome, result.outcome), verification_id=result.verification_id)


# One name for the app to mount: two handlers, so each path documents exactly its own parameters.
autocall_callback = Router(
    "/callbacks/autocall", route_handlers=[with_credential_in_url, with_credential_elsewhere]
)
