"""Client-facing endpoints: thin views over the verification service."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.params import JSONBody

from otpservice.http.auth import require_api_key
from otpservice.http.dependencies import Verifications
from otpservice.http.schemas import (
    CreateVerification,
    VerificationIdInPath,
    VerificationView,
    VerifyCode,
    VerifyResult,
    problem_responses,
)

_TAGS = ["verifications"]


class VerificationController(Controller):
    path = "/otp"
    guards = [require_api_key]
    tags = _TAGS
    security = [{"apiKey": []}]

    @post(
        "/",
        status_code=201,
        summary="Start a verification and place its call",
        responses=problem_responses(400, 401, 422, 429, 503),
    )
    async def create(
        self, data: JSONBody[CreateVerification], verifications: Verifications
    ) -> VerificationView:
        verification = await verifications.start(
            data.phone, code_length=data.code_length, ttl_seconds=data.ttl_seconds, metadata=data.metadata
        )
        return VerificationView.of(verification)

    @get(
        "/{verification_id:str}",
        summary="Read a verification",
        responses=problem_responses(400, 401, 404, 503),
    )
    async def read(
        self, verifications: Verifications, verification_id: VerificationIdInPath
    ) -> VerificationView:
        verification = await verifications.get(verification_id)
        return VerificationView.of(verification)

    @post(
        "/{verification_id:str}/resend",
        status_code=200,
        summary="Call again with a new code",
        responses=problem_responses(400, 401, 404, 409, 422, 429, 503),
    )
    async def resend(
        self, verifications: Verifications, verification_id: VerificationIdInPath
    ) -> VerificationView:
        verification = await verifications.resend(verification_id)
        return VerificationView.of(verification)

    @delete(
        "/{verification_id:str}",
        status_code=200,
        summary="Cancel a pending verification",
        responses=problem_responses(400, 401, 404, 409, 503),
    )
    async def cancel(
        self, verifications: Verifications, verification_id: VerificationIdInPath
    ) -> VerificationView:
        verification = await verifications.cancel(verification_id)
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
    async def verify(self, data: JSONBody[VerifyCode], verifications: Verifications) -> VerifyResult:
        result = await verifications.verify(data.id, data.code)
        return VerifyResult.of(result.verification, valid=result.valid)
