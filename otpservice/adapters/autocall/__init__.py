"""TEL4VN Autocall adapter: the async client and the typed results and failures it returns."""

from otpservice.adapters.autocall.client import AutocallClient, create_http_client
from otpservice.adapters.autocall.masking import mask_call_id
from otpservice.adapters.autocall.models import (
    AccessToken,
    AutocallError,
    CalleeRejection,
    CallPlacement,
    CallReport,
    CallReportNotFound,
    CallStatus,
    ProviderAuthFailed,
    ProviderMalformedResponse,
    ProviderRejectedRequest,
    ProviderUnavailable,
    TemplateImport,
)

__all__ = [
    "AccessToken",
    "AutocallClient",
    "AutocallError",
    "CallPlacement",
    "CallReport",
    "CallReportNotFound",
    "CallStatus",
    "CalleeRejection",
    "ProviderAuthFailed",
    "ProviderMalformedResponse",
    "ProviderRejectedRequest",
    "ProviderUnavailable",
    "TemplateImport",
    "create_http_client",
    "mask_call_id",
]
