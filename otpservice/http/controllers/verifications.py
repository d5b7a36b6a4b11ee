"""Client-facing endpoints: thin views over the verification service, scoped to the caller's tenant."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from otpservice.http.auth import require_api_key
from otpservice.http.dependencies import IdempotencyDependency, TenantDependency, Verifications
from otpservice.http.idempotency import Answer
from otpservice.http.schemas import (
    CreateVerification,
    IdempotencyKeyHeader,
    ResendCode,
    VerificationIdInPath,
    VerificationView,
    VerifyCode,
    VerifyResult,
    problem_responses,
)

_TAGS = ["verifications"]
_ANSWERED_PENDING = {
    200: ResponseSpec(
        VerificationView,
        description="the number already has a pending verification of yours: that one is answered (same "
        "id), called again only if its resend cooldown has passed",
    )
}


class VerificationController(Controller):
    path = "/otp"
    guards = [require_api_key]
    tags = _TAGS
    security = [{"apiKey": []}]

    @post(
        "/",
        status_code=201,
        summary="Start a verification and place its call",
        responses=_ANSWERED_PENDING | problem_responses(400, 401, 403, 409, 422, 429, 503),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CreateVerification],
        verifications: Verifications,
        tenant: TenantDependency,
        idempotency: IdempotencyDependency,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[VerificationView]:
        async def start() -> Answer:
            started = await verifications.start(
                tenant,
                data.phone,
                code_length=data.code_length,
                ttl_seconds=data.ttl_seconds,
                metadata=data.metadata,
                client_ip=data.client_ip,
                code=data.code,
            )
            return Answer.of(201 if started.created else 200, VerificationView.of(started.verification))

        return await idempotency.run(  # type: ignore[return-value]
            request, tenant, idempotency_key, idempotency.fingerprint("POST /otp", data), start
        )

    @get(
        "/{verification_id:str}",
        summary="Read a verification",
        responses=problem_responses(400, 401, 404, 422, 503),
    )
    async def read(
        self, verifications: Verifications, tenant: TenantDependency, verification_id: VerificationIdInPath
    ) -> VerificationView:
        verification = await verifications.get(tenant, verification_id)
        return VerificationView.of(verification)

    @post(
        "/{verification_id:str}/resend",
        status_code=200,
        summary="Call again with a new code (or, for a code you chose, the same code)",
        responses=problem_responses(400, 401, 403, 404, 409, 422, 429, 503),
    )
    async def resend(
        self,
        request: Request[Any, Any, Any],
        verifications: Verifications,
        tenant: TenantDependency,
        idempotency: IdempotencyDependency,
        verification_id: VerificationIdInPath,
        data: JSONBody[ResendCode | None] = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[VerificationView]:
        async def resend() -> Answer:
            code = data.code if data is not None else None
            verification = await verifications.resend(tenant, verification_id, code)
            return Answer.of(200, VerificationView.of(verification))

        route = f"POST /otp/{verification_id}/resend"
        return await idempotency.run(  # type: ignore[return-value]
            request, tenant, idempotency_key, idempotency.fingerprint(route, data), resend
        )

    @delete(
        "/{verification_id:str}",
        status_code=200,
        summary="Cancel a pending verification",
        responses=problem_responses(400, 401, 404, 409, 422, 503),
    )
    async def cancel(
        self, verifications: Verifications, tenant: TenantDependency, verification_id: VerificationIdInPath
    ) -> VerificationView:
        verification = await verifications.cancel(tenant, verification_id)
        return VerificationView.of(verification)


class VerifyController(Controller):
    path = "/verify"
    guards = [require_api_key]
    tags = _TAGS
    security = [{"apiKey": []}]

    @post(
        "/",
        status_code=200,
        summary="Check a code the user typed",
        responses=problem_responses(400, 401, 404, 409, 422, 503),
    )
    async def verify(
        self, data: JSONBody[VerifyCode], verifications: Verifications, tenant: TenantDependency
    ) -> VerifyResult:
        result = await verifications.verify(tenant, data.id, data.code)
        return VerifyResult.of(result.verification, valid=result.valid)
