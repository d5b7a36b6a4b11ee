"""The HTTP server in front of the app: uvicorn, with limits on what a client may send and how slowly.

uvicorn with httptools bounds neither a request head nor the time it takes to arrive: httptools grows
a header value by concatenation as its pieces arrive (quadratic in its length), so one connection
sending a 128 MiB header held the event loop for seconds (bench/edge.py: /healthz answered in 2 s,
and eight such clients took the worker to 500 MiB), and a client that never finished its head, or
never sent a byte, kept its connection forever. :class:`EdgeProtocol` is uvicorn's own httptools
protocol with limits applied before the parser sees the bytes:

- a header line of at most 16 KiB, a head of at most 64 KiB: else 431;
- a request, head and body, arrives within ``OTP_CLIENT_TIMEOUT_SECONDS`` of its first byte, any
  time the server holds it up (reading paused, a 100 Continue not yet sent) not counted: else 408;
- a new connection sends its first byte within the keep-alive timeout (5 s): else it is closed.

Refusals are problem+json like the app's, counted in ``otp_http_refused{code}`` and logged as
``http.refused``.

Checks are also shed here, while the worker's hashing is full (see :mod:`otpservice.service.hashing`):
``POST /verify`` is answered 503 ``overloaded`` from the parsed head, without a request task, the
ASGI app or its middleware (``otpservice.http.shedding`` remains for the requests this cannot
take: pipelined ones and those expecting ``100 Continue``). Clients that retry at once instead of
waiting the ``Retry-After`` would otherwise come back as fast as they are answered, and on a small
machine their refusals take the CPU the hashing threads need: after a refusal the connection's next
request is read ``SHED_PAUSE_SECONDS`` later (the refusal itself goes out at once; a client that
waits as asked never notices). Checks pipelined in one write, which the pause cannot slow down,
are refused up to the second, which closes the connection.

A request refused while an answer to an earlier pipelined one is still owed sends nothing ahead of
that answer: it is dropped, and the connection closes once the answers owed are out.

uvicorn's h11 parser was the other way: it bounds a head (answering 400 text/plain) but neither a
header line nor the time a request takes (``python -m bench.edge --only h11``).
"""

from __future__ import annotations

import asyncio
import functools
import http
import socket
from typing import Any

import httptools
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from otpservice.http.problems import problem_body
from otpservice.http.shedding import OVERLOADED_BODY, OVERLOADED_HEADERS
from otpservice.service import metrics
from otpservice.service.hashing import HashingPool
from otpservice.settings import Settings

# More than most servers allow (Node: 16 KiB for a whole head; nginx: 8 KiB a line, 32 KiB in all),
# so a large cookie or token is never refused here when it passed a proxy in front.
HEADER_FIELD_LIMIT = 16 * 1024  # one header line's name and value
HEAD_LIMIT = 64 * 1024  # the request line, every header line and the blank line ending them

# After a refusal the service half-closes and reads (dropping) a little of what the client is still
# sending: a connection closed with unread bytes is reset, and the reset can destroy the answer before
# the client reads it. A client that sends more than this, or for longer, is cut off.
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 2.0

# How long a connection whose check was refused for load is not read from (see the module docstring):
# short enough that a refusal still reaches an impatient client well within 50 ms.
SHED_PAUSE_SECONDS = 0.025
_OVERLOADED_HEAD = [
    b"HTTP/1.1 503 Service Unavailable",
    *(name + b": " + value for name, value in OVERLOADED_HEADERS),
]

log = structlog.get_logger(__name__)


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options shared by ``serve``, ``dev`` and the test servers."""
    return {
        # A partial of a module-level class: `serve --workers N` pickles it into each worker process.
        "http": functools.partial(EdgeProtocol, client_timeout_seconds=settings.client_timeout_seconds),
        "ws": "none",  # the service has no WebSocket route: an upgrade is just an HTTP request
        "timeout_keep_alive": 5,
    }


def _hashing_of(app: Any) -> HashingPool | None:
    """The hashing pool of the app behind uvicorn's wrappers (proxy headers, message logger)."""
    for _ in range(4):
        state = getattr(app, "state", None)
        if state is not None:
            hashing: HashingPool | None = getattr(state, "hashing", None)
            return hashing
        app = getattr(app, "app", None)
    return None


class _FieldTooLarge(Exception):
    """Raised from the parser's header callback to stop parsing at once."""


class _EncodedBody(Exception):
    """Raised from the parser's head callback: the body comes encoded, which nothing here decodes."""

    def __init__(self, status: int, code: str, title: str, detail: str):
        super().__init__(detail)
        self.refusal = (status, code, title, detail)


def _codings(value: bytes) -> set[bytes]:
    return {coding.strip().lower() for coding in value.split(b",")} - {b""}


def _positive(length: bytes) -> bool:
    """Whether a Content-Length announces a body (one the parser cannot read is its to refuse)."""
    try:
        return int(length) > 0
    except ValueError:
        return True


def _encoded_body(headers: list[tuple[bytes, bytes]]) -> _EncodedBody | None:
    """Why a request's body cannot be read as sent (a coding other than identity, or a transfer
    coding other than chunked), if it has a body; None when it can."""
    fields: dict[bytes, set[bytes]] = {}
    has_body = False
    for name, value in headers:
        if name in (b"content-encoding", b"transfer-encoding"):
            fields.setdefault(name, set()).update(_codings(value))
        if name == b"transfer-encoding" or (name == b"content-length" and _positive(value)):
            has_body = True
    if not has_body:
        return None
    if fields.get(b"transfer-encoding", set()) - {b"chunked"}:
        return _EncodedBody(*_TRANSFER_CODING_REFUSED)
    if fields.get(b"content-encoding", set()) - {b"identity"}:
        return _EncodedBody(*_CONTENT_CODING_REFUSED)
    return None


_TRANSFER_CODING_REFUSED = (
    501,
    "unsupported_transfer_encoding",
    "Unsupported transfer encoding",
    "request bodies are read as sent: the only transfer coding taken is chunked",
)
_CONTENT_CODING_REFUSED = (
    415,
    "unsupported_content_encoding",
    "Unsupported content encoding",
    "request bodies are read as sent: send the body without a Content-Encoding",
)


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing heads that are too large and requests that are too slow."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        client_timeout_seconds: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.client_timeout_seconds = client_timeout_seconds
        # Bytes of the request head received so far; None from its end to the end of its body.
        self.head_bytes: int | None = 0
        self.request_deadline: asyncio.TimerHandle | None = None
        self.refused = False  # answered with a refusal: nothing more is parsed
        self.linger_bytes_left = LINGER_BYTES
        self.linger_end: asyncio.TimerHandle | None = None
        self.shedding = False  # this request is a check refused for load: its body is dropped
        self.shed_pause: asyncio.TimerHandle | None = None
        self.upgrade_offered = False  # this request offers an upgrade (h2c): read again without it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio turns Nagle's algorithm off only for sockets created as IPPROTO_TCP, and uvicorn
        # binds its own (`serve --workers N`) as protocol 0: an answer's head and body, written
        # apart, then waited 40 ms for the client's delayed ACK. uvloop turns it off itself.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # uvicorn starts its idle timer only after a response: a connection that never sends a byte
        # would otherwise stay open forever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_deadline()
        if self.shed_pause is not None:
            self.shed_pause.cancel()
        if self.linger_end is not None:
            self.linger_end.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self._drop_while_lingering(len(data))
            return
        self._unset_keepalive_if_required()
        if self.request_deadline is None:  # the first bytes of a request
            self.request_deadline = self.loop.call_later(self.client_timeout_seconds, self._deadline_passed)
        # While a head is incomplete the parser gets no more than the bytes the head may still take,
        # so a head over the limit is refused before the parser has held more than HEAD_LIMIT of it.
        # A body is fed in pieces of HEAD_LIMIT too: a head that begins inside a piece (a pipelined
        # request after a body) is counted from the next piece, so it may reach twice the limit,
        # still a bound (fed whole, a read of 256 KiB could carry it past the limit uncounted).
        while data and not self.refused and not self.transport.is_closing():
            if self.head_bytes is None:
                piece, data = data[:HEAD_LIMIT], data[HEAD_LIMIT:]
            else:
                room = HEAD_LIMIT - self.head_bytes
                if room <= 0:
                    self._refuse_oversized_head(f"the request head is over {HEAD_LIMIT // 1024} KiB")
                    return
                piece, data = data[:room], data[room:]
                self.head_bytes += len(piece)
            self._feed(piece)

    def _feed(self, piece: bytes) -> None:
        """Parse ``piece``; the errors are handled as uvicorn's ``data_received`` handles them."""
        # A loop, not a recursion: a read may hold hundreds of pipelined requests offering an upgrade
        while (rest := self._feed_once(piece)) is not None:
            piece = rest

    def _feed_once(self, piece: bytes) -> bytes | None:
        """Parse ``piece``; answers what is left to parse again when a request offered an upgrade."""
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserError as exc:
            # httptools raises whatever a callback raised as its own callback error: ours stops an
            # oversized header; uvicorn's (a URL httptools parses no further) is a bad request.
            if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(
                exc.__context__, _FieldTooLarge
            ):
                self._refuse_oversized_head(f"a request header is over {HEADER_FIELD_LIMIT // 1024} KiB")
                return None
            if isinstance(exc, httptools.HttpParserCallbackError) and isinstance(
                exc.__context__, _EncodedBody
            ):
                self._refuse(*exc.__context__.refusal)
                return None
            # Refused as every other request the server turns away (not uvicorn's plain-text 400,
            # written at once): problem+json, counted, and never ahead of an answer still owed.
            self._refuse(400, "bad_request", "Bad request", "the request is not valid HTTP/1.1")
        except httptools.HttpParserUpgrade as exc:
            return self._without_upgrade(piece[exc.args[0] :])
        return None

    def _without_upgrade(self, rest: bytes) -> bytes | None:
        """Serve a request that offered an upgrade as the plain HTTP/1.1 request it also is.

        No upgrade is served here (no WebSocket route, no h2c), but clients offer one by default
        (Java's HttpClient sends ``Upgrade: h2c`` on plain http), and llhttp stops at the head of
        such a request, its body left unparsed: uvicorn then ran the app on an empty body (its open
        issue 2722). A fresh parser takes the head again without the offer, then ``rest``: the bytes
        answered are those to feed it (None when the request is refused).
        """
        if not self.upgrade_offered or self.parser.get_method() == b"CONNECT":
            self._refuse(400, "bad_request", "Bad request", "this server does not tunnel or upgrade")
            return None
        self.upgrade_offered = False
        dropped = (b"upgrade", b"http2-settings")
        lines = [
            b"%s %s HTTP/%s" % (self.parser.get_method(), self.url, self.parser.get_http_version().encode())
        ]
        for name, value in self.headers:
            if name == b"connection":
                tokens = [token.strip() for token in value.split(b",")]
                value = b", ".join(token for token in tokens if token.lower() not in dropped)
                if not value:
                    continue
            elif name in dropped:
                continue
            lines.append(name + b": " + value)
        self.parser = httptools.HttpRequestParser(self)
        return b"\r\n".join(lines) + b"\r\n\r\n" + rest

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.request_deadline is None:  # begun in the same read that ended the request before
            self.request_deadline = self.loop.call_later(self.client_timeout_seconds, self._deadline_passed)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > HEADER_FIELD_LIMIT:
            raise _FieldTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():
            self.upgrade_offered = True  # read again without the offer (_without_upgrade)
            return
        # A body sent compressed would be read as its raw bytes (a gzip body answered "malformed
        # JSON", a plain one labelled gzip taken as if plain): refused as what it is, before the app.
        # Raised while the head is still counted as arriving, so the refusal is this request's own.
        if not self.transport.is_closing() and (encoded := _encoded_body(self.headers)) is not None:
            raise encoded
        self.head_bytes = None
        if self.transport.is_closing():
            return  # more requests in a read that closed the connection (a refusal): none is taken
        if self._is_check_to_shed():
            self.shedding = True  # answered once its body has passed (on_message_complete)
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.shedding:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.upgrade_offered:
            return  # llhttp ends a request offering an upgrade at its head: it is read again
        self.head_bytes = 0
        self._cancel_request_deadline()
        if self.transport.is_closing():
            return
        if self.shedding:
            self.shedding = False
            self._answer_overloaded()
            return
        super().on_message_complete()

    def _is_check_to_shed(self) -> bool:
        """A ``POST /verify`` arriving while hashing is full, that can be answered from here."""
        if self.parser.get_method() != b"POST" or self.expect_100_continue or self.parser.should_upgrade():
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind a request still being answered: its turn comes later
        hashing = _hashing_of(self.app)
        return hashing is not None and hashing.full and httptools.parse_url(self.url).path == b"/verify"

    def _answer_overloaded(self) -> None:
        """Refuse the check at once, then read nothing more from the client for a moment."""
        metrics.CHECKS_SHED.inc()
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        # Another check shed while reading is paused came in the same read (pipelined): the pause
        # cannot slow such a client down, so it is answered and the connection closed.
        keep_alive = keep_alive and self.shed_pause is None
        head = [*_OVERLOADED_HEAD]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        if not keep_alive:
            head.append(b"connection: close")
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + OVERLOADED_BODY)
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
            return
        self.flow.pause_reading()
        self.shed_pause = self.loop.call_later(SHED_PAUSE_SECONDS, self._resume_after_shedding)

    def on_response_complete(self) -> None:
        if self.refused and not self.pipeline and not self.transport.is_closing():
            # the answers owed ahead of a refused pipelined request are out (see _refuse)
            self.server_state.total_requests += 1
            self.transport.close()
            return
        super().on_response_complete()

    def _resume_after_shedding(self) -> None:
        self.shed_pause = None
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        idle = self.cycle is None or self.cycle.response_complete  # no request pipelined after it runs
        if idle and self.timeout_keep_alive_task is None:  # as after any answer: idle from now on
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _deadline_passed(self, server_held: bool = False) -> None:
        """Refuse the request as too slow, unless the server held it up.

        ``server_held``: the server held it up when the deadline last passed, so the client has had
        less than a timeout since the server let it go on.
        """
        self.request_deadline = None
        if self.refused or self.transport.is_closing():
            return
        # The server stopped reading (a pipelined request waits its turn, or the app has not taken
        # the body yet), or the client waits for the 100 Continue the app sends only when it asks
        # for the body: the delay is not the client's.
        holding = self.flow.read_paused or (
            self.head_bytes is None and self.cycle is not None and self.cycle.waiting_for_100_continue
        )
        if holding or server_held:
            # Looked at once a timeout, the hold may have ended just after the last look: a whole
            # timeout from the first look that finds it over gives the client one at least.
            self.request_deadline = self.loop.call_later(
                self.client_timeout_seconds, self._deadline_passed, holding
            )
            return
        seconds = f"{self.client_timeout_seconds:g}"
        self._refuse(
            408, "request_timeout", "Request timeout", f"the request did not arrive within {seconds} s"
        )

    def _refuse_oversized_head(self, detail: str) -> None:
        self._refuse(431, "request_header_too_large", "Request header too large", detail)

    def _refuse(self, status: int, code: str, title: str, detail: str) -> None:
        """Answer a problem in the app's place and close the connection.

        When a response has begun, nothing can be slipped in: an earlier pipelined request's
        response ends first and the connection closes after it; a response to this very request
        (the app answered before the body came) is followed by the close alone.
        """
        self.refused = True
        self._cancel_request_deadline()
        self._unset_keepalive_if_required()
        metrics.HTTP_REFUSED.labels(code).inc()
        log.warning("http.refused", status=status, problem=code)
        # A check being shed has no cycle of its own: the one there is an earlier request's, answered.
        cycle = None if self.shedding else self.cycle
        if cycle is not None and not cycle.response_complete and self.head_bytes is not None:
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        queued = [entry for entry in self.pipeline if entry[0] is cycle]
        if queued:
            # Pipelined behind an answer still owed: nothing may go out ahead of it. The request
            # is dropped unanswered and the connection closes once the answers owed are out.
            self.pipeline.remove(queued[0])
            self.flow.pause_reading()
            return
        if cycle is not None and self.head_bytes is None:
            if cycle.response_started:
                self.transport.close()
                return
            # The app is still waiting for the body: it sees the client gone, and sends nothing.
            cycle.disconnected = True
            # No 408 comes while a 100 Continue is owed (_deadline_passed), but were a refusal to,
            # uvicorn's receive() would write the 100 after the write_eof below, and raise.
            cycle.waiting_for_100_continue = False
            cycle.message_event.set()
        self.transport.write(self._problem_response(status, code, title, detail))
        if not self.transport.can_write_eof():  # TLS cannot half-close
            self.transport.close()
            return
        self.transport.write_eof()
        self.linger_end = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _problem_response(self, status: int, code: str, title: str, detail: str) -> bytes:
        """The bytes of a problem+json answer shaped like the app's (otpservice.http.problems)."""
        body = problem_body(status, code, title, detail)
        lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [
            b"content-type: application/problem+json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def _drop_while_lingering(self, size: int) -> None:
        self.linger_bytes_left -= size
        if self.linger_bytes_left <= 0 and not self.transport.is_closing():
            self.transport.close()

    def _cancel_request_deadline(self) -> None:
        if self.request_deadline is not None:
            self.request_deadline.cancel()
            self.request_deadline = None
