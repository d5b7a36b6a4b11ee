"""The one exception table: every failure becomes ``application/problem+json`` with a stable ``code``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from redis.exceptions import RedisError

from otpservice.domain import errors
from otpservice.domain.clock import to_iso

log = structlog.get_logger(__name__)

# Domain error -> (HTTP status, title). The code comes from the error itself.
_DOMAIN_STATUS: dict[type[errors.VerificationError], tuple[int, str]] = {
    errors.VerificationNotFound: (404, "Verification not found"),
    errors.InvalidPhone: (422, "Invalid phone number"),
    errors.InvalidCodeFormat: (422, "Invalid code format"),
    errors.InvalidClientIp: (422, "Invalid client address"),
    errors.NotPending: (409, "Verification is no longer pending"),
    errors.AttemptsInFlight: (409, "Every attempt left is being checked"),
    errors.CheckNotRecorded: (503, "Code not judged"),
    errors.Overloaded: (503, "Overloaded"),
    errors.StorageUnavailable: (503, "Storage unavailable"),
    errors.ResendTooSoon: (429, "Too soon to call again"),
    errors.SendLimitReached: (429, "Call budget spent"),
    errors.PhoneRateLimited: (429, "Too many calls to this number"),
    errors.ClientRateLimited: (429, "Too many calls for this client"),
    errors.PrefixRateLimited: (429, "Too many calls to this number range"),
    errors.TenantCallCapReached: (429, "Daily call cap reached"),
    errors.CallBudgetExhausted: (503, "Call budget exhausted"),
    errors.PhoneLockedForChecks: (409, "Number locked after too many wrong codes"),
    errors.PhoneLocked: (429, "Number locked after too many wrong codes"),
    errors.CustomCodeNotAllowed: (403, "Custom codes not allowed"),
    errors.CustomCodeMismatch: (422, "Not the verification's code"),
    errors.IdempotencyKeyReused: (422, "Idempotency-Key reused"),
    errors.IdempotencyInProgress: (409, "Request in progress"),
    errors.ProviderRejected: (422, "The provider refused the number"),
    errors.ProviderUnavailable: (503, "Voice provider unavailable"),
    errors.CodeLost: (503, "Code cannot be checked"),
    errors.CallbackRejected: (401, "Callback not authenticated"),
}


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=status,
        type_=f"/problems/{code}",
        title=title,
        detail=detail,
        headers=headers,
        extra={"code": code, **extra},
    )


def problem_body(status: int, code: str, title: str, detail: str) -> bytes:
    """A problem document's bytes, for answers sent below the app (the server edge, load shedding)."""
    document = {"status": status, "type": f"/problems/{code}", "title": title, "detail": detail, "code": code}
    return json.dumps(document, separators=(",", ":")).encode()


def domain_title(error: type[errors.VerificationError]) -> str:
    """The title the app's answers give a domain error."""
    return _DOMAIN_STATUS[error][1]


def domain_problem(exc: errors.VerificationError) -> ProblemDetailsException:
    status, title = next(v for t, v in _DOMAIN_STATUS.items() if isinstance(exc, t))
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.ResendTooSoon):
        headers["Retry-After"] = str(exc.retry_after_seconds)
        extra["resend_available_at"] = to_iso(exc.available_at)
    if isinstance(exc, errors.PhoneLocked):
        extra["locked_until"] = to_iso(exc.locked_until)
    if isinstance(
        exc,
        errors.BudgetSpent
        | errors.PhoneLocked
        | errors.IdempotencyInProgress
        | errors.AttemptsInFlight
        | errors.CheckNotRecorded
        | errors.Overloaded
        | errors.StorageUnavailable,
    ):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    if isinstance(exc, errors.CheckNotRecorded):
        extra["id"] = exc.verification_id
    if isinstance(exc, errors.StorageUnavailable):
        if exc.verification_id:
            extra["id"] = exc.verification_id
        if exc.call_placed is not None:
            extra["call_placed"] = exc.call_placed
    if isinstance(exc, errors.ProviderUnavailable):
        headers["Retry-After"] = str(exc.retry_after_seconds)
        extra["call_may_have_rung"] = exc.call_may_have_rung
        if exc.verification_id:
            extra["id"] = exc.verification_id
    if isinstance(exc, errors.CodeLost):
        headers["Retry-After"] = str(exc.retry_after_seconds)
        extra["id"] = exc.verification_id
        extra["call_may_have_rung"] = True
    if isinstance(exc, errors.ProviderRejected):
        extra["id"] = exc.verification_id
        extra["reason"] = exc.reason
    if isinstance(exc, errors.CallbackRejected):
        headers["WWW-Authenticate"] = "Bearer"
    return problem(status, exc.code, title, exc.detail, headers or None, **extra)


def _from_validation(exc: ValidationException) -> ProblemDetailsException:
    """Litestar answers 400; a body that parses but breaks the schema is 422 here, naming the fields."""
    raw = exc.extra if isinstance(exc.extra, list) else []
    fields = [_field_error(item) for item in raw if isinstance(item, dict)]
    named = ", ".join(f["field"] for f in fields if f["field"]) or "body"
    return problem(422, "validation_error", "Invalid request", f"invalid value for: {named}", errors=fields)


# msgspec names a missing or unknown field only in its message, with the body as the key
_NAMED_IN_MESSAGE = re.compile(r"^Object (?:missing required|contains unknown) field `(.+)`$")


def _field_error(item: dict[str, Any]) -> dict[str, str]:
    """Name the body "body" (Litestar calls it "data"), or the field a message names, and say
    plainly when the body is missing."""
    field = str(item.get("key", ""))
    message = str(item.get("message", ""))
    if field == "data":
        field = "body"
        if message == "'data'":
            message = "a JSON object body is required"
        elif named := _NAMED_IN_MESSAGE.match(message):
            field = named.group(1)
    return {"field": field, "message": message}


def _from_http(exc: HTTPException) -> ProblemDetailsException:
    codes: dict[type[HTTPException], str] = {
        NotAuthorizedException: "unauthorized",
        NotFoundException: "not_found",
        MethodNotAllowedException: "method_not_allowed",
    }
    code = codes.get(type(exc))
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        code = "request_too_large"
    if code is None:
        # Validation errors are mapped apart, so a 400 from Litestar is a body it could not parse.
        code = "malformed_body" if exc.status_code == 400 else "bad_request"
    detail = exc.detail
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers["WWW-Authenticate"] = "Bearer"
    return problem(exc.status_code, code, _TITLES.get(code, "Error"), detail, headers or None)


_TITLES = {
    "unauthorized": "Missing or wrong API key",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "request_too_large": "Request too large",
    "bad_request": "Bad request",
    "malformed_body": "Malformed body",
}


def _from_redis(exc: RedisError) -> ProblemDetailsException:
    """A Redis failure that reached the edge unannounced (the store translates its own)."""
    log.error("storage.unavailable", error=type(exc).__name__, exc_info=exc)
    return problem(
        503,
        "storage_unavailable",
        "Storage unavailable",
        "the verification store did not answer; the request may or may not have been applied",
        {"Retry-After": "2"},
    )


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything unforeseen: logged once with its traceback (never its locals), answered 500."""
    log.error(
        "request.failed",
        error=type(exc).__name__,
        path=request.scope.get("path_template", ""),
        exc_info=exc,
    )
    return problem(500, "internal_error", "Internal error", "the server failed; try again").to_response(
        request
    )


def _http_problem(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own refusals as problems; its server errors are failures like any other."""
    if exc.status_code >= 500:
        return _internal(request, exc)
    return _from_http(exc).to_response(request)


def problem_details_plugin() -> ProblemDetailsPlugin:
    mapping: dict[type[Exception], Callable[[Any], ProblemDetailsException]] = {
        errors.VerificationError: domain_problem,
        ValidationException: _from_validation,
        RedisError: _from_redis,
    }
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=mapping))


EXCEPTION_HANDLERS = {Exception: _internal, HTTPException: _http_problem}
