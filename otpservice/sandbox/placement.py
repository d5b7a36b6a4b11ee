"""Placing OTP and TTS calls: validate the request the way the provider does and start each call."""

from __future__ import annotations

import uuid
from typing import Any

from otpservice.sandbox.errors import ProviderError
from otpservice.sandbox.numbers import (
    MAGIC_REJECTIONS,
    MISSING_TTS_KEY,
    WRONG_FORMAT,
    is_national_number,
)
from otpservice.sandbox.simulator import CallSimulator
from otpservice.sandbox.state import EXAMPLE_USER_ID, Call, CallType, SandboxState


def place_calls(
    state: SandboxState, simulator: CallSimulator, campaign_id: str, call_type: CallType, body: object
) -> dict[str, Any]:
    """Place one call per valid callee; return the provider's ``data`` object with success and fail."""
    if campaign_id not in state.campaign_ids:
        raise ProviderError(404, f"campaign {campaign_id} not found")
    if not isinstance(body, dict):
        raise ProviderError(400, "the body must be a JSON object")
    callees = body.get("callees")
    if not isinstance(callees, list) or not callees:
        raise ProviderError(400, "callees must be a non-empty list")
    params = body.get("params")
    if not isinstance(params, dict):
        raise ProviderError(400, "params must be an object")
    template_name = params.get("template_name")
    if not isinstance(template_name, str) or not template_name:
        raise ProviderError(400, "params.template_name is required")
    if call_type == "OTP" and params.get("code_otp") in (None, ""):
        raise ProviderError(400, "params.code_otp is required")
    callback_url = body.get("callback_url")
    callback_apikey = body.get("callback_apikey")
    if callback_url is not None and not (isinstance(callback_url, str) and callback_url.startswith("http")):
        raise ProviderError(400, "callback_url must be an http(s) URL")
    if callback_apikey is not None and not isinstance(callback_apikey, str):
        raise ProviderError(400, "callback_apikey must be a string")
    template = state.template(campaign_id, template_name)
    if template is None:
        raise ProviderError(400, f"template {template_name} not found")

    phones = [str(callee) for callee in callees]
    if any(params.get(key) in (None, "") for key in template.keys):
        return _results(campaign_id, [{phone: MISSING_TTS_KEY} for phone in phones], [])
    fail: list[dict[str, str]] = []
    success: list[str] = []
    spoken_text = template.render(params)
    for phone in phones:
        if not is_national_number(phone):
            fail.append({phone: WRONG_FORMAT})
        elif phone in MAGIC_REJECTIONS:
            fail.append({phone: MAGIC_REJECTIONS[phone]})
        else:
            call = Call(
                call_id=f"{campaign_id}_1_1_{EXAMPLE_USER_ID}_{uuid.uuid4()}_{phone}",
                campaign_id=campaign_id,
                user_id=EXAMPLE_USER_ID,
                phone_number=phone,
                call_type=call_type,
                template_name=template_name,
                spoken_text=spoken_text,
                params=dict(params),
                callback_url=callback_url or None,
                callback_apikey=callback_apikey or None,
                code_otp=str(params["code_otp"]) if call_type == "OTP" else None,
            )
            state.calls[call.call_id] = call
            simulator.start(call)
            success.append(call.call_id)
    return _results(campaign_id, fail, success)


def _results(campaign_id: str, fail: list[dict[str, str]], success: list[str]) -> dict[str, Any]:
    return {"campaign_id": campaign_id, "results": {"fail": fail, "success": success}}
