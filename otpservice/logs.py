"""Structured logging for the service and every library it uses, with redaction as the last guard.

Call sites already log only masked numbers and never codes or secrets; the redaction processor
catches what slips through (a library logging a URL with a number in it, a careless new field).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import msgspec
import structlog

from otpservice.domain.phone import mask_phone

_SECRET_FIELDS = frozenset(
    {
        "code",
        "otp",
        "code_otp",
        "pepper",
        "token",
        "access_token",
        "secret",
        "secret_key",
        "api_key",
        "apikey",
        "callback_apikey",
        "authorization",
        "credential",
        "password",
    }
)
# Digit runs between letters (inside ids, hashes) are not numbers; after "_" (call ids) they are.
_PHONE_LIKE = re.compile(r"(?<![0-9A-Za-z])\+?\d{9,15}(?![0-9A-Za-z])")
_CALLBACK_CREDENTIAL = re.compile(r"(/callbacks/autocall/[^/\s]+/\d+/)[0-9a-fA-F]+")
# Libraries that log full URLs (which can carry numbers and callback credentials) at INFO.
_QUIET_LIBRARIES = ("httpx", "httpcore", "uvicorn.access")


def _scrub(text: str) -> str:
    text = _CALLBACK_CREDENTIAL.sub(r"\1[redacted]", text)
    return _PHONE_LIKE.sub(lambda m: mask_phone(m.group()), text)


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secret fields and mask anything that looks like a phone number."""
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_FIELDS:
            event_dict[key] = "[redacted]"
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
    return event_dict


def _drop_terminal_colours(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn attaches an ANSI-coloured copy of its messages; it is noise in structured logs."""
    event_dict.pop("color_message", None)
    return event_dict


def _json_line(event: Any, **_: Any) -> str:
    """One JSON line by msgspec (several times faster than json.dumps); anything else as its repr."""
    return msgspec.json.encode(event, enc_hook=repr).decode()


def configure_logging(level: str = "INFO", *, json: bool = True, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging through one redacting pipeline to ``stream`` (stderr)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if json
        else structlog.dev.ConsoleRenderer(
            colors=False,
            exception_formatter=structlog.dev.plain_traceback,  # never rich's, which shows locals
        )
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Each logger binds its pipeline once (every request logs; rebuilding it each time showed in
        # profiles). Reconfiguring later still reaches the new handler: it is the root logger's.
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _drop_terminal_colours,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
