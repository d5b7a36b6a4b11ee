"""The published request and response bodies (they shape openapi.yaml)."""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIHeader, OpenAPIType, Operation, Reference, Schema
from litestar.params import HeaderParameter, PathParameter
from litestar.plugins import OpenAPISchemaPlugin
from msgspec import Meta

from otpservice.domain.verification import DeliveryStatus, Verification, VerificationStatus

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

PROBLEM_JSON = "application/problem+json"
MetadataKey = Annotated[str, Meta(min_length=1, max_length=64)]
_METADATA_KEYS_MAX = 20
_METADATA_TEXT_MAX = 512
MetadataValue = Annotated[str, Meta(max_length=_METADATA_TEXT_MAX)] | int | float | bool | None
# Litestar documents a union as oneOf, which 0 breaks (an integer and a number at once), and says
# nothing of a dict's key rules or size: the metadata schema is written out here instead.
# (JSON Schema as plain data: Litestar copies schema_extra into the document as it is.)
_METADATA_VALUE_SCHEMA = {
    "type": ["string", "number", "boolean", "null"],
    "maxLength": _METADATA_TEXT_MAX,  # binds strings only
}
_METADATA_SCHEMA = {
    "type": "object",
    "additionalProperties": _METADATA_VALUE_SCHEMA,
    "propertyNames": {"type": "string", "minLength": 1, "maxLength": 64},
    "maxProperties": _METADATA_KEYS_MAX,
}
# What parse_phone lets through to phonenumbers (after strip()). Documented, not enforced by the
# decoder: a number that breaks it is refused as invalid_phone like any number phonenumbers refuses.
_PHONE_PATTERN = r"^\s*\+?[0-9 ()\-.]{6,24}\s*$"
# A code the service could have generated or accepted; anything else is invalid_code_format.
_CODE_PATTERN = r"^[0-9]{4,10}$"
_ID_PATTERN = r"^vf_[A-Za-z0-9_\-]+$"  # our ids; also keeps ids off the shard keys ("calls")
VerificationId = Annotated[str, Meta(min_length=1, max_length=64, pattern=_ID_PATTERN)]
VerificationIdInPath = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=_ID_PATTERN)]
IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="Repeat a request safely: the same key with the same body within 24 h returns the "
        "first answer and places no call (scoped to your API client)",
        required=False,
    ),
]


class CreateVerification(msgspec.Struct, forbid_unknown_fields=True):
    """Start a verification: call ``phone`` and read it a fresh code."""

    phone: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=32,
            description="Digits, spaces, dashes, dots or parentheses, with an optional leading +; it must "
            "then be a valid number of an allowed country that a voice call can reach, else 422 "
            "invalid_phone",
            examples=["0987654321", "+84 987 654 321"],
            extra_json_schema={"extra": {"pattern": _PHONE_PATTERN}},
        ),
    ]
    code_length: Annotated[int, Meta(ge=4, le=10)] | None = None
    ttl_seconds: Annotated[int, Meta(ge=60, le=600)] | None = None
    metadata: (
        Annotated[
            dict[MetadataKey, MetadataValue],
            Meta(
                max_length=_METADATA_KEYS_MAX,
                extra_json_schema={"extra": {"one_of": [_METADATA_SCHEMA, {"type": "null"}]}},
            ),
        ]
        | None
    ) = None
    client_ip: (
        Annotated[
            str,
            Meta(
                min_length=2,
                max_length=45,
                description="The end user's IP address, for the per-client budget (never taken from "
                "X-Forwarded-For); IPv6 addresses count by their /64",
                examples=["203.0.113.7", "2001:db8::1"],
            ),
        ]
        | None
    ) = None
    code: (
        Annotated[
            str,
            Meta(
                pattern=_CODE_PATTERN,
                description="The code to read (SMS fallback: the code the SMS carried); only for "
                "tenants with allow_custom_code, else 403 custom_code_not_allowed",
            ),
        ]
        | None
    ) = None


class ResendCode(msgspec.Struct, forbid_unknown_fields=True):
    """A resend body: only for a verification whose code the tenant chose, which must be repeated."""

    code: Annotated[str, Meta(pattern=_CODE_PATTERN)] | None = None


class VerifyCode(msgspec.Struct, forbid_unknown_fields=True):
    """A code the user typed, for the verification ``id``."""

    id: VerificationId
    code: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=32,
            description="The digits the user typed; anything but the verification's number of digits is "
            "422 invalid_code_format and costs no attempt",
            extra_json_schema={"extra": {"pattern": _CODE_PATTERN}},
        ),
    ]


class DeliveryView(msgspec.Struct):
    """The latest call placed for the verification."""

    status: DeliveryStatus
    call_id: str | None
    provider_status: str | None
    duration_seconds: int | None
    reason: str | None
    updated_at: datetime


class VerificationView(msgspec.Struct):
    """A verification as clients see it; the code never appears."""

    id: str
    status: VerificationStatus
    phone: str
    channel: str
    code_length: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    attempts: int
    max_attempts: int
    attempts_remaining: int
    sends: int
    resend_available_at: datetime
    metadata: Annotated[
        dict[str, MetadataValue],
        Meta(extra_json_schema={"extra": {"additional_properties": _METADATA_VALUE_SCHEMA}}),
    ]
    delivery: DeliveryView

    @classmethod
    def of(cls, verification: Verification, **extra: object) -> Self:
        """The view of a domain verification (field names match, so the copy is by name)."""
        delivery = DeliveryView(
            **{name: getattr(verification.delivery, name) for name in DeliveryView.__struct_fields__}
        )
        copied = {name: getattr(verification, name) for name in cls.__struct_fields__ if name not in extra}
        return cls(**(copied | extra | {"delivery": delivery}))


class VerifyResult(VerificationView):
    """The verification after a code was checked, and whether that code was right."""

    valid: bool


class WebhookEvent(msgspec.Struct):
    """The body POSTed to a tenant's webhook: what happened, when, and the verification as GET
    showed it at that moment (never a code, never more of the number than GET shows)."""

    type: str
    timestamp: datetime
    data: VerificationView


def webhook_event_body(kind: str, at: datetime, verification: Verification) -> bytes:
    return msgspec.json.encode(WebhookEvent(kind, at, VerificationView.of(verification.as_of(at))))


CallbackOutcome = Literal["recorded", "duplicate", "stale"]


class CallbackAck(msgspec.Struct):
    """What a provider callback did: ``recorded``, ``duplicate`` or ``stale`` (older or another call)."""

    outcome: CallbackOutcome
    verification_id: str


class Health(msgspec.Struct):
    status: str


class FieldError(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True, kw_only=True):
    """RFC 9457 problem details; ``code`` is the stable machine-readable identifier."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    id: str | None = None
    call_placed: bool | None = None
    call_may_have_rung: bool | None = None
    reason: str | None = None
    resend_available_at: datetime | None = None
    locked_until: datetime | None = None
    errors: list[FieldError] | None = None


_RETRY_AFTER = "Retry-After"
_AUTHENTICATE = "WWW-Authenticate"
_REPLAYED = "Idempotent-Replayed"
_HEADERS = {
    _RETRY_AFTER: ("Seconds to wait before trying again", Schema(type=OpenAPIType.INTEGER, minimum=1)),
    _AUTHENTICATE: ("The scheme to authenticate with: Bearer", Schema(type=OpenAPIType.STRING)),
    _REPLAYED: (
        "true when this is the kept answer of an earlier request with the same Idempotency-Key",
        Schema(type=OpenAPIType.STRING, enum=["true"]),
    ),
}


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One refusal the contract documents: its status, its codes and the schema of its document."""

    status: int
    codes: tuple[str, ...]
    summary: str
    schema: type[Problem] = field(compare=False)


# The header each problem schema comes with, by component name (an operation sees only references).
_HEADER_OF_SCHEMA: dict[str, str | None] = {}


def _kind(
    status: int,
    name: str,
    codes: str | tuple[str, ...],
    summary: str,
    *,
    header: str | None = None,
    **required: Any,
) -> ProblemKind:
    """A problem document whose ``code`` is one of ``codes``, whose ``required`` members are present,
    and which comes with ``header``."""
    codes = (codes,) if isinstance(codes, str) else codes
    code_type = Annotated[Literal[codes], Meta(description=summary)]  # type: ignore[valid-type]
    schema: type[Problem] = msgspec.defstruct(  # type: ignore[assignment]  # a subclass of its base
        name,
        [("code", code_type), *required.items()],
        bases=(Problem,),
        kw_only=True,
        omit_defaults=True,
        module=__name__,
    )
    _HEADER_OF_SCHEMA[name] = header
    return ProblemKind(status, codes, summary, schema)


MALFORMED_BODY = _kind(
    400, "MalformedBodyProblem", "malformed_body", "the body is not JSON, not UTF-8, or nested too deeply"
)
UNAUTHORIZED = _kind(
    401, "UnauthorizedProblem", "unauthorized", "the API key is missing or wrong", header=_AUTHENTICATE
)
INVALID_CALLBACK_CREDENTIALS = _kind(
    401,
    "InvalidCallbackCredentialsProblem",
    "invalid_callback_credentials",
    "the callback carries no credential of this call, or a wrong one",
    header=_AUTHENTICATE,
)
CUSTOM_CODE_NOT_ALLOWED = _kind(
    403, "CustomCodeNotAllowedProblem", "custom_code_not_allowed", "this API client may not choose the code"
)
NOT_FOUND = _kind(
    404,
    "NotFoundProblem",
    "not_found",
    "no such verification (never created, another client's, or past its retention)",
)
NOT_PENDING = _kind(
    409,
    "NotPendingProblem",
    tuple(status.value for status in VerificationStatus if status is not VerificationStatus.PENDING),
    "the verification is no longer pending: the code is its status",
)
ATTEMPTS_IN_FLIGHT = _kind(
    409,
    "AttemptsInFlightProblem",
    "attempts_in_flight",
    "every attempt left is being checked by other requests right now; nothing was judged (Retry-After)",
    header=_RETRY_AFTER,
)
PHONE_LOCKED = _kind(
    429,
    "PhoneLockedProblem",
    "phone_locked",
    "the number is locked after too many wrong codes, until locked_until (Retry-After)",
    locked_until=datetime,
    header=_RETRY_AFTER,
)
PHONE_LOCKED_FOR_CHECKS = replace(PHONE_LOCKED, status=409)
IDEMPOTENCY_IN_PROGRESS = _kind(
    409,
    "IdempotencyInProgressProblem",
    "idempotency_in_progress",
    "a request with this Idempotency-Key is still running (Retry-After)",
    header=_RETRY_AFTER,
)
REQUEST_TOO_LARGE = _kind(
    413, "RequestTooLargeProblem", "request_too_large", "the body is larger than 64 KiB"
)
VALIDATION_ERROR = _kind(
    422,
    "ValidationErrorProblem",
    "validation_error",
    "the request breaks this schema; errors names each field",
    errors=list[FieldError],
)
INVALID_PHONE = _kind(
    422,
    "InvalidPhoneProblem",
    "invalid_phone",
    "not a valid number, not of an allowed country, or not one a voice call can reach",
)
INVALID_CLIENT_IP = _kind(
    422, "InvalidClientIpProblem", "invalid_client_ip", "client_ip is not an IPv4 or IPv6 address"
)
INVALID_CODE_FORMAT = _kind(
    422,
    "InvalidCodeFormatProblem",
    "invalid_code_format",
    "the code is not digits, or not as many as the verification's (or code_length's); no attempt spent",
)
CUSTOM_CODE_MISMATCH = _kind(
    422,
    "CustomCodeMismatchProblem",
    "custom_code_mismatch",
    "not the code of the verification whose code the client chose (judged like a wrong code)",
)
IDEMPOTENCY_KEY_REUSED = _kind(
    422,
    "IdempotencyKeyReusedProblem",
    "idempotency_key_reused",
    "this Idempotency-Key was used for another request",
)
PROVIDER_REJECTED = _kind(
    422,
    "ProviderRejectedProblem",
    "provider_rejected",
    "the provider refused the number; the verification (id) is failed, reason is the provider's word",
    id=str,
    reason=str,
)
INVALID_CALLBACK = _kind(
    422, "InvalidCallbackProblem", "invalid_callback", "the callback says nothing readable"
)
RESEND_TOO_SOON = _kind(
    429,
    "ResendTooSoonProblem",
    "resend_too_soon",
    "the last call was too recent: call again from resend_available_at (Retry-After)",
    resend_available_at=datetime,
    header=_RETRY_AFTER,
)
MAX_SENDS_REACHED = _kind(
    429, "MaxSendsReachedProblem", "max_sends_reached", "the verification has used all its calls"
)
PHONE_RATE_LIMITED = _kind(
    429,
    "PhoneRateLimitedProblem",
    "phone_rate_limited",
    "too many calls to this number (Retry-After)",
    header=_RETRY_AFTER,
)
CLIENT_RATE_LIMITED = _kind(
    429,
    "ClientRateLimitedProblem",
    "client_rate_limited",
    "too many calls for this client_ip (Retry-After)",
    header=_RETRY_AFTER,
)
PREFIX_RATE_LIMITED = _kind(
    429,
    "PrefixRateLimitedProblem",
    "prefix_rate_limited",
    "too many calls to this number range (Retry-After)",
    header=_RETRY_AFTER,
)
TENANT_CALL_CAP_REACHED = _kind(
    429,
    "TenantCallCapReachedProblem",
    "tenant_call_cap_reached",
    "this API client's daily call cap is spent (Retry-After: until midnight UTC)",
    header=_RETRY_AFTER,
)
PROVIDER_UNAVAILABLE = _kind(
    503,
    "ProviderUnavailableProblem",
    "provider_unavailable",
    "the voice provider failed; call_may_have_rung says whether the code may still arrive (Retry-After)",
    call_may_have_rung=bool,
    header=_RETRY_AFTER,
)
CODE_LOST = _kind(
    503,
    "CodeLostProblem",
    "code_lost",
    "the call may ring but its code cannot be checked: its hash could not be computed (start, or "
    "resend, again), or storage lost the verification in a failover while its call was placed (start "
    "a new one; GET answers 404) (Retry-After)",
    id=str,
    call_may_have_rung=bool,
    header=_RETRY_AFTER,
)
STORAGE_UNAVAILABLE = _kind(
    503,
    "StorageUnavailableProblem",
    "storage_unavailable",
    "the verification store did not answer; id and call_placed say what is known (Retry-After)",
    header=_RETRY_AFTER,
)
CHECK_NOT_RECORDED = _kind(
    503,
    "CheckNotRecordedProblem",
    "check_not_recorded",
    "the code was not judged in time; no attempt was spent, submit it again (Retry-After)",
    id=str,
    header=_RETRY_AFTER,
)
OVERLOADED = _kind(
    503,
    "OverloadedProblem",
    "overloaded",
    "more codes are being checked than this worker takes; no attempt was spent (Retry-After: 1)",
    header=_RETRY_AFTER,
)
CALL_BUDGET_EXHAUSTED = _kind(
    503,
    "CallBudgetExhaustedProblem",
    "call_budget_exhausted",
    "the service-wide call breaker is open (Retry-After)",
    header=_RETRY_AFTER,
)
NOT_READY = _kind(
    503,
    "NotReadyProblem",
    "not_ready",
    "a dependency is not usable by this worker; checks names each one's state (Retry-After)",
    checks=dict[str, str],
    header=_RETRY_AFTER,
)


def problem_answers(*kinds: ProblemKind) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problems an operation answers, one per status, naming every code."""
    by_status: dict[int, list[ProblemKind]] = {}
    for kind in kinds:
        by_status.setdefault(kind.status, []).append(kind)
    return {
        status: ResponseSpec(
            functools.reduce(operator.or_, (kind.schema for kind in group)),
            description="; ".join(f"{', '.join(kind.codes)}: {kind.summary}" for kind in group),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status, group in sorted(by_status.items())
    }


_IDEMPOTENCY_KEY = "Idempotency-Key"
# What an Idempotency-Key keeps for repeats (replayed without their headers): successes, and
# refusals after which something had changed.
_KEPT_STATUSES = frozenset({"200", "201", "422", "503"})


@dataclass
class DocumentedOperation(Operation):
    """An operation documented as the app answers it (pass as a handler's ``operation_class``).

    Litestar's generation misses what the app adds around handlers: the headers of problems and of
    Idempotency-Key replays, and that validation failures are 422 problems (it documents a 400 of
    its own for every handler that takes parameters).
    """

    def __post_init__(self) -> None:
        replays = any(
            not isinstance(parameter, Reference) and parameter.name == _IDEMPOTENCY_KEY
            for parameter in self.parameters or []
        )
        responses = self.responses or {}
        for status in list(responses):
            response = responses[status]
            if isinstance(response, Reference):
                continue
            problem = (response.content or {}).get(PROBLEM_JSON)
            if int(status) >= 400 and problem is None:
                del responses[status]
                continue
            replayed = replays and status in _KEPT_STATUSES
            names = (
                [_HEADER_OF_SCHEMA.get(name) for name in _component_names(problem.schema)] if problem else []
            )
            headers = dict(response.headers or {})
            for header in {name for name in names if name}:
                # a replay carries no Retry-After, and not every code of a status has one
                required = not replayed and all(name == header for name in names)
                description, schema = _HEADERS[header]
                headers[header] = OpenAPIHeader(description=description, schema=schema, required=required)
            if replayed:
                description, schema = _HEADERS[_REPLAYED]
                headers[_REPLAYED] = OpenAPIHeader(description=description, schema=schema, required=False)
            response.headers = headers or None
        for parameter in self.parameters or []:
            if isinstance(parameter, Reference) or parameter.required:
                continue
            # an optional parameter is left out, never null: only its string form is documented
            if isinstance(parameter.schema, Schema) and parameter.schema.one_of:
                arms = [arm for arm in parameter.schema.one_of if not _is_null(arm)]
                if len(arms) == 1 and isinstance(arms[0], Schema):
                    parameter.schema.one_of = None
                    parameter.schema.type = arms[0].type
        if self.request_body is not None and not isinstance(self.request_body, Reference):
            # a body the handler takes as ``X | None`` may be left out
            for media in self.request_body.content.values():
                choices = media.schema.one_of if isinstance(media.schema, Schema) else None
                if choices and any(_is_null(choice) for choice in choices):
                    self.request_body.required = False


def _component_names(schema: Schema | Reference | None) -> list[str]:
    """The component names a response schema refers to, directly or through oneOf."""
    if isinstance(schema, Reference):
        # while the document is built, a component is named by its module too (otpservice_http_...)
        return [schema.ref.rsplit("/", 1)[-1].rsplit("_", 1)[-1]]
    if isinstance(schema, Schema) and schema.one_of:
        return [name for arm in schema.one_of for name in _component_names(arm)]
    return []


def _is_null(schema: Schema | Reference) -> bool:
    return isinstance(schema, Schema) and schema.type == OpenAPIType.NULL


class ClosedStructSchemaPlugin(OpenAPISchemaPlugin):
    """Documents ``additionalProperties: false`` for request bodies that refuse unknown fields.

    Litestar's own struct schemas say nothing of ``forbid_unknown_fields``; this plugin lets the
    built-in one build the schema and closes it.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return (
            not field_definition.is_union
            and field_definition.is_subclass_of(msgspec.Struct)
            and bool(field_definition.type_.__struct_config__.forbid_unknown_fields)
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        builtin = next(
            plugin
            for plugin in schema_creator.plugins
            if plugin is not self
            and isinstance(plugin, OpenAPISchemaPlugin)
            and plugin.is_plugin_supported_field(field_definition)
        )
        schema = builtin.to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema
