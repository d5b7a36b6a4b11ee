"""Client-facing endpoints: thin views over the verification service, scoped to the caller's tenant."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, route
from litestar.enums import HttpMethod
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from otpservice.http.auth import api_key_middleware
from otpservice.http.dependencies import CallerDependency
from otpservice.http.idempotency import Answer
from otpservice.http.schemas import (
    ATTEMPTS_IN_FLIGHT,
    CALL_BUDGET_EXHAUSTED,
    CHECK_NOT_RECORDED,
    CLIENT_RATE_LIMITED,
    CODE_LOST,
    CUSTOM_CODE_MISMATCH,
    CUSTOM_CODE_NOT_ALLOWED,
    IDEMPOTENCY_IN_PROGRESS,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_CLIENT_IP,
    INVALID_CODE_FORMAT,
    INVALID_PHONE,
    MALFORMED_BODY,
    MAX_SENDS_REACHED,
    NOT_FOUND,
    NOT_PENDING,
    OVERLOADED,
    PHONE_LOCKED,
    PHONE_LOCKED_FOR_CHECKS,
    PHONE_RATE_LIMITED,
    PREFIX_RATE_LIMITED,
    PROVIDER_REJECTED,
    PROVIDER_UNAVAILABLE,
    REQUEST_TOO_LARGE,
    RESEND_TOO_SOON,
    STORAGE_UNAVAILABLE,
    TENANT_CALL_CAP_REACHED,
    UNAUTHORIZED,
    VALIDATION_ERROR,
    CreateVerification,
    DocumentedOperation,
    IdempotencyKeyHeader,
    ResendCode,
    VerificationIdInPath,
    VerificationView,
    VerifyCode,
    VerifyResult,
    problem_answers,
)

_TAGS = ["verifications"]
_ANSWERED_PENDING = {
    200: ResponseSpec(
        VerificationView,
        description="the number already has a pending verification of yours: that one is answered (same "
        "id), called again only if its resend cooldown has passed",
    )
}


def allowed_methods(request: Request[Any, Any, Any]) -> str:
    """Every method some handler serves on the request's path, for an ``Allow`` header."""
    template = request.scope.get("path_template", "")
    methods = {
        method for found in request.app.routes if found.path_format == template for method in found.methods
    }
    return ", ".join(sorted(methods))


class VerificationController(Controller):
    path = "/otp"
    middleware = [api_key_middleware]
    tags = _TAGS
    security = [{"apiKey": []}]

    @post(
        "/",
        status_code=201,
        summary="Start a verification and place its call",
        response_description="the new verification, its first call placed",
        operation_class=DocumentedOperation,
        responses=_ANSWERED_PENDING
        | problem_answers(
            MALFORMED_BODY,
            UNAUTHORIZED,
            CUSTOM_CODE_NOT_ALLOWED,
            # a start that meets the number's pending verification goes on as its resend would
            NOT_PENDING,
            ATTEMPTS_IN_FLIGHT,
            PHONE_LOCKED_FOR_CHECKS,
            IDEMPOTENCY_IN_PROGRESS,
            REQUEST_TOO_LARGE,
            VALIDATION_ERROR,
            INVALID_PHONE,
            INVALID_CLIENT_IP,
            INVALID_CODE_FORMAT,
            CUSTOM_CODE_MISMATCH,
            IDEMPOTENCY_KEY_REUSED,
            PROVIDER_REJECTED,
            PHONE_RATE_LIMITED,
            CLIENT_RATE_LIMITED,
            PREFIX_RATE_LIMITED,
            TENANT_CALL_CAP_REACHED,
            PHONE_LOCKED,
            MAX_SENDS_REACHED,
            PROVIDER_UNAVAILABLE,
            CODE_LOST,
            STORAGE_UNAVAILABLE,
            CALL_BUDGET_EXHAUSTED,
            CHECK_NOT_RECORDED,
        ),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CreateVerification],
        caller: CallerDependency,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[VerificationView]:
        async def start() -> Answer:
            started = await caller.verifications.start(
                caller.tenant,
                data.phone,
                code_length=data.code_length,
                ttl_seconds=data.ttl_seconds,
                metadata=data.metadata,
                client_ip=data.client_ip,
                code=data.code,
            )
            return Answer.of(201 if started.created else 200, VerificationView.of(started.verification))

        idempotency = caller.idempotency
        return await idempotency.run(  # type: ignore[return-value]
            request, caller.tenant, idempotency_key, idempotency.fingerprint("POST /otp", data), start
        )

    @get(
        "/{verification_id:str}",
        summary="Read a verification",
        response_description="the verification as it stands",
        operation_class=DocumentedOperation,
        responses=problem_answers(UNAUTHORIZED, NOT_FOUND, VALIDATION_ERROR, STORAGE_UNAVAILABLE),
    )
    async def read(self, caller: CallerDependency, verification_id: VerificationIdInPath) -> VerificationView:
        verification = await caller.verifications.get(caller.tenant, verification_id)
        return VerificationView.of(verification)

    @post(
        "/{verification_id:str}/resend",
        status_code=200,
        summary="Call again with a new code (or, for a code you chose, the same code)",
        response_description="the verification, its new call placed",
        operation_class=DocumentedOperation,
        responses=problem_answers(
            MALFORMED_BODY,
            UNAUTHORIZED,
            CUSTOM_CODE_NOT_ALLOWED,
            NOT_FOUND,
            NOT_PENDING,
            ATTEMPTS_IN_FLIGHT,
            PHONE_LOCKED_FOR_CHECKS,
            IDEMPOTENCY_IN_PROGRESS,
            REQUEST_TOO_LARGE,
            VALIDATION_ERROR,
            INVALID_CODE_FORMAT,
            CUSTOM_CODE_MISMATCH,
            IDEMPOTENCY_KEY_REUSED,
            PROVIDER_REJECTED,
            RESEND_TOO_SOON,
            MAX_SENDS_REACHED,
            PHONE_RATE_LIMITED,
            PREFIX_RATE_LIMITED,
            TENANT_CALL_CAP_REACHED,
            PHONE_LOCKED,
            PROVIDER_UNAVAILABLE,
            CODE_LOST,
            STORAGE_UNAVAILABLE,
            CALL_BUDGET_EXHAUSTED,
            CHECK_NOT_RECORDED,
        ),
    )
    async def resend(
        self,
        request: Request[Any, Any, Any],
        caller: CallerDependency,
        verification_id: VerificationIdInPath,
        data: JSONBody[ResendCode | None] = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[VerificationView]:
        async def resend() -> Answer:
            code = data.code if data is not None else None
            verification = await caller.verifications.resend(caller.tenant, verification_id, code)
            return Answer.of(200, VerificationView.of(verification))

        resent = f"POST /otp/{verification_id}/resend"
        idempotency = caller.idempotency
        return await idempotency.run(  # type: ignore[return-value]
            request, caller.tenant, idempotency_key, idempotency.fingerprint(resent, data), resend
        )

    @delete(
        "/{verification_id:str}",
        status_code=200,
        summary="Cancel a pending verification",
        response_description="the verification, canceled",
        operation_class=DocumentedOperation,
        responses=problem_answers(
            UNAUTHORIZED, NOT_FOUND, NOT_PENDING, VALIDATION_ERROR, STORAGE_UNAVAILABLE
        ),
    )
    async def cancel(
        self, caller: CallerDependency, verification_id: VerificationIdInPath
    ) -> VerificationView:
        verification = await caller.verifications.cancel(caller.tenant, verification_id)
        return VerificationView.of(verification)

    @route(
        "/{verification_id:str}",
        http_method=[HttpMethod.OPTIONS],
        status_code=HTTP_204_NO_CONTENT,
        include_in_schema=False,
    )
    async def allow(self, request: Request[Any, Any, Any]) -> Response[None]:
        """OPTIONS: every method of the path.

        Litestar 2 builds a path's OPTIONS answer with the path's first handler, and it never learns
        of the later ones (litestar-org/litestar#4169): here it answered "DELETE, OPTIONS". A
        controller registers its handlers in name order, so this one, named to come first, is the
        path's OPTIONS handler and no other is built; it reads the methods off the finished routes.
        """
        return Response(None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": allowed_methods(request)})


class VerifyController(Controller):
    path = "/verify"
    middleware = [api_key_middleware]
    tags = _TAGS
    security = [{"apiKey": []}]

    @post(
        "/",
        status_code=200,
        summary="Check a code the user typed",
        response_description="the verification after the check; valid says whether the code was right",
        operation_class=DocumentedOperation,
        responses=problem_answers(
            MALFORMED_BODY,
            UNAUTHORIZED,
            NOT_FOUND,
            NOT_PENDING,
            ATTEMPTS_IN_FLIGHT,
            PHONE_LOCKED_FOR_CHECKS,
            REQUEST_TOO_LARGE,
            VALIDATION_ERROR,
            INVALID_CODE_FORMAT,
            STORAGE_UNAVAILABLE,
            CHECK_NOT_RECORDED,
            OVERLOADED,
        ),
    )
    async def verify(self, data: JSONBody[VerifyCode], caller: CallerDependency) -> VerifyResult:
        result = await caller.verifications.verify(caller.tenant, data.id, data.code)
        return VerifyResult.of(result.verification, valid=result.valid)
