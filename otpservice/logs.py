"""Structured logging for the service and every library it uses, with redaction as the last guard.

Call sites already log only masked numbers and never codes or secrets; the redaction processor
catches what slips through (a library logging a URL with a number in it, a careless new field).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
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
# Also a number written in groups (+84 98 765 4321, 0987-654-321, 0987.654.321): from "+" or "0",
# so that dates and times (2026-11-29 07:00) are not taken for one.
_PHONE_LIKE = re.compile(r"(?<![0-9A-Za-z])(?:\+?\d{9,15}|(?:\+|0)\d(?:[ .()-]{0,2}\d){7,13})(?![0-9A-Za-z])")
_CALLBACK_CREDENTIAL = re.compile(r"(/callbacks/autocall/[^/\s]+/\d+/)[0-9a-fA-F]+")
# Libraries that log full URLs (which can carry numbers and callback credentials) at INFO.
_QUIET_LIBRARIES = ("httpx", "httpcore", "uvicorn.access")


# Fields the pipeline itself adds before redaction (a clock, a level, a module name): never a number.
_ADDED_BY_PIPELINE = frozenset({"timestamp", "level", "logger"})


def _masked(match: re.Match[str]) -> str:
    return mask_phone(match.group())


def _scrub(text: str) -> str:
    # Searching first: most values hold no number, and a search costs a fraction of a substitution.
    if "/callbacks/autocall/" in text:
        text = _CALLBACK_CREDENTIAL.sub(r"\1[redacted]", text)
    if _PHONE_LIKE.search(text) is None:
        return text
    return _PHONE_LIKE.sub(_masked, text)


def _redacted(value: Any) -> Any:
    """``value`` with secret fields dropped and numbers masked, also inside lists, tuples and dicts."""
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, dict):
        return {
            key: "[redacted]" if str(key).lower() in _SECRET_FIELDS else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secret fields and mask anything that looks like a phone number."""
    for key, value in event_dict.items():  # values are replaced in place: the keys stay the same
        if key in _ADDED_BY_PIPELINE:
            continue
        if key.lower() in _SECRET_FIELDS:
            event_dict[key] = "[redacted]"
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
        elif isinstance(value, list | tuple | dict):
            event_dict[key] = _redacted(value)
    return event_dict


def _drop_terminal_colours(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn attaches an ANSI-coloured copy of its messages; it is noise in structured logs."""
    event_dict.pop("color_message", None)
    return event_dict


def _json_line(event: Any, **_: Any) -> str:
    """One JSON line by msgspec (several times faster than json.dumps); anything else as its repr."""
    return msgspec.json.encode(event, enc_hook=repr).decode()


class _Sink:
    """Where every log line goes: the stream :func:`configure_logging` chose last.

    Loggers are cached on first use (rebuilding their pipeline per line showed in profiles), so they
    write here rather than to a stream of their own, and reconfiguring still reaches them all.
    """

    def __init__(self) -> None:
        self.stream: TextIO = sys.stderr
        self.lock = threading.Lock()

    def write_line(self, line: str) -> None:
        with self.lock:  # lines from the hashing threads and the event loop never interleave
            self.stream.write(line + "\n")
            self.stream.flush()


_SINK = _Sink()
_LEVEL = [logging.INFO]  # the level configure_logging chose last (cached loggers read it per line)


class _LineLogger:
    """structlog's final logger: hands the rendered line to the sink.

    The service's own events take this short path (no stdlib LogRecord, caller lookup or handler
    chain: about a third of a check's CPU went there); libraries' stdlib logs still go through
    the root handler, which renders them with the same processors into the same sink.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, message: str) -> None:
        _SINK.write_line(message)

    debug = info = warning = error = critical = exception = msg


def _line_logger(*args: Any) -> _LineLogger:
    return _LineLogger(args[0] if args and isinstance(args[0], str) else "")


_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50, "exception": 40}


def _below_level(_: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _LEVEL_NUMBERS.get(method_name, 20) < _LEVEL[0]:
        raise structlog.DropEvent
    return event_dict


class _SinkHandler(logging.Handler):
    """The root handler for stdlib logs (libraries'), writing to the sink."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _SINK.write_line(self.format(record))
        except Exception:
            self.handleError(record)


def configure_logging(level: str = "INFO", *, json: bool = True, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging through one redacting pipeline to ``stream`` (stderr)."""
    _SINK.stream = stream or sys.stderr
    _LEVEL[0] = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    renderer = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if json
        else structlog.dev.ConsoleRenderer(
            colors=False,
            exception_formatter=structlog.dev.plain_traceback,  # never rich's, which shows locals
        )
    )
    last: list[Any] = [structlog.processors.format_exc_info, _drop_terminal_colours, redact, renderer]
    structlog.configure(
        processors=[
            _below_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamp,
            *last,
        ],
        logger_factory=_line_logger,
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )
    handler = _SinkHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # A library's `extra` goes in first, so the fields the pipeline adds after it (and which
            # redaction trusts) overwrite any extra of the same name rather than pass unscrubbed.
            foreign_pre_chain=[
                structlog.stdlib.ExtraAdder(),
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamp,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
