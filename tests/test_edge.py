"""The server's edge: oversized heads answered 431, slow clients 408, /healthz fast meanwhile,
and what a client may do within the limits (keep-alive, chunked bodies, 100-continue) served.

Raw sockets against the real service: an HTTP client library would refuse to send what these
clients send, or would not show the bytes the server answers.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar import Litestar, MediaType, Request, post
from litestar.params import FromQuery

from otpservice.http.controllers.health import healthz
from otpservice.http.edge import HEAD_LIMIT, HEADER_FIELD_LIMIT, server_options
from tests.support.raw_http import Answer, connect, parse_answers, read_answer, read_until_closed
from tests.support.sandbox import running_sandbox
from tests.support.servers import serve_in_thread
from tests.support.service import API_KEY, ServiceHandle, running_service

CLIENT_TIMEOUT = 1.0
ECHO_TIMEOUT = 0.25


@pytest.fixture(scope="module")
def service(redis_url: str) -> Iterator[ServiceHandle]:
    """One service for the module, giving clients 1 s to send a request."""
    with (
        running_sandbox() as sandbox,
        running_service(redis_url, sandbox.url, client_timeout_seconds=CLIENT_TIMEOUT) as handle,
    ):
        yield handle


@post("/echo", status_code=200, media_type=MediaType.TEXT)
async def echo(
    request: Request[Any, Any, Any], wait: FromQuery[float] = 0, hold: FromQuery[float] = 0
) -> bytes:
    """The request's body, asked for only after ``wait`` seconds, answered ``hold`` seconds after."""
    await asyncio.sleep(wait)
    body = await request.body()
    await asyncio.sleep(hold)
    return body


@pytest.fixture(scope="module")
def echo_url(service: ServiceHandle) -> Iterator[str]:
    """An app echoing a POST's body, behind the edge, giving clients 0.25 s to send a request."""
    settings = service.settings.with_overrides(client_timeout_seconds=ECHO_TIMEOUT)
    with serve_in_thread(Litestar([echo], logging_config=None), **server_options(settings)) as url:
        yield url


def exchange(service: ServiceHandle, payload: bytes) -> list[Answer]:
    """Send ``payload`` on a new connection; the answers received until the server closed it."""
    with connect(service.url) as sock:
        sock.sendall(payload)
        return parse_answers(read_until_closed(sock))


def head(*fields: bytes, size: int | None = None, close: bool = True) -> bytes:
    """A GET /healthz head with these header lines, padded by more lines of 8 KiB at most to ``size``."""
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"Connection: close\r\n" if close else b"")
    lines = start + b"".join(line + b"\r\n" for line in fields)
    if size is not None:
        missing = size - len(lines) - len(b"\r\n")
        while missing > 0:
            name = b"X-Pad-%d" % (missing % 1000)
            line = field(name, min(8 * 1024, missing - len(b": \r\n")))
            lines += line + b"\r\n"
            missing -= len(line) + 2
    request = lines + b"\r\n"
    assert size is None or len(request) == size, (len(request), size)
    return request


def field(name: bytes, size: int) -> bytes:
    """A header line whose name and value together are ``size`` bytes."""
    return name + b": " + b"v" * (size - len(name))


def post_echo(body: bytes, *, close: bool = True) -> bytes:
    """A POST /echo request sending ``body``."""
    connection = b"Connection: close\r\n" if close else b""
    length = b"Content-Length: %d\r\n" % len(body)
    return b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n" + connection + length + b"\r\n" + body


def test_a_header_over_16_kib_is_refused_with_431(service: ServiceHandle) -> None:
    """A single 17 KiB header is answered 431 problem+json and the connection is closed."""
    [answer] = exchange(service, head(field(b"Cookie", 17 * 1024)))
    assert answer.status == 431
    assert answer.problem()["code"] == "request_header_too_large"
    assert answer.headers["connection"] == "close"


def test_refusals_are_logged_and_counted(service: ServiceHandle) -> None:
    """A refusal is logged as http.refused and counted in otp_http_refused{code}."""
    exchange(service, head(field(b"Cookie", 17 * 1024)))
    with service.client() as client:
        metrics = client.get("/metrics").text
    assert re.search(r'^otp_http_refused_total\{code="request_header_too_large"\} [1-9]', metrics, re.M)
    logged = [json.loads(line) for line in service.logs.getvalue().splitlines() if "http.refused" in line]
    assert logged[-1].items() >= {"status": 431, "problem": "request_header_too_large"}.items()


def test_headers_over_64_kib_in_total_are_refused_with_431(service: ServiceHandle) -> None:
    """Small headers adding up to more than 64 KiB are answered 431 problem+json."""
    fields = [field(f"X-Part-{n}".encode(), 8 * 1024) for n in range(9)]
    [answer] = exchange(service, head(*fields))
    assert answer.status == 431
    assert answer.problem()["detail"] == "the request head is over 64 KiB"


def test_a_head_exactly_at_both_limits_is_served_and_one_byte_more_is_not(service: ServiceHandle) -> None:
    """A 16 KiB header in a 64 KiB head is served; one byte more in either is refused."""
    largest = field(b"Cookie", HEADER_FIELD_LIMIT)
    assert [a.status for a in exchange(service, head(largest, size=HEAD_LIMIT))] == [200]
    assert [a.status for a in exchange(service, head(largest, size=HEAD_LIMIT + 1))] == [431]
    too_large = field(b"Cookie", HEADER_FIELD_LIMIT + 1)
    assert [a.status for a in exchange(service, head(too_large, size=HEAD_LIMIT))] == [431]


def test_the_head_limit_applies_to_each_request_of_a_connection(service: ServiceHandle) -> None:
    """Three near-limit requests, pipelined on one connection, are all served: the count restarts."""
    near_limit = head(field(b"Cookie", HEADER_FIELD_LIMIT), size=HEAD_LIMIT - 100, close=False)
    last = head(field(b"Cookie", HEADER_FIELD_LIMIT), size=HEAD_LIMIT - 100)
    answers = exchange(service, near_limit + near_limit + last)
    assert [a.status for a in answers] == [200, 200, 200]


def test_a_client_that_never_finishes_its_head_gets_408(service: ServiceHandle) -> None:
    """A client sending a header line every 0.2 s gets 408 problem+json after the client timeout."""
    with connect(service.url) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.setblocking(False)
        while not select.select([sock], [], [], 0.2)[0]:
            sock.sendall(b"X-Still-Here: yes\r\n")
        sock.setblocking(True)
        received = read_until_closed(sock)
        elapsed = time.monotonic() - started
    [answer] = parse_answers(received)
    assert answer.status == 408
    assert answer.problem()["code"] == "request_timeout"
    assert CLIENT_TIMEOUT <= elapsed < CLIENT_TIMEOUT + 1.5


def test_a_body_that_never_arrives_gets_408(service: ServiceHandle) -> None:
    """A request whose body stops short is answered 408 after the client timeout, not left waiting."""
    with connect(service.url) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"id": "vf_'
        )
        received = read_until_closed(sock)
        elapsed = time.monotonic() - started
    [answer] = parse_answers(received)
    assert answer.status == 408
    assert answer.problem()["code"] == "request_timeout"
    assert CLIENT_TIMEOUT <= elapsed < CLIENT_TIMEOUT + 1.5


# A client streaming 4 MiB headers, reconnecting each time it is answered; it prints each answer's
# status (0: cut off unanswered). A process of its own: as a thread it would take the test's GIL,
# and the latency measured would be the GIL's.
# At most 15 x 64 KiB per connection: under the 1 MiB the server drains after refusing, so a loaded
# machine cannot turn the 431 into a reset by having the client send on after the refusal.
STREAMER = """
import select, socket, sys
chunk = b"a" * 65536
while True:
    with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nX-Huge: ")
            for _ in range(15):
                sock.sendall(chunk)
                if select.select([sock], [], [], 0)[0]:
                    break
            print(int(sock.recv(64).split(b" ")[1]), flush=True)
        except (BrokenPipeError, ConnectionResetError, IndexError):
            print(0, flush=True)
"""


def test_healthz_stays_fast_while_a_client_streams_a_huge_header(service: ServiceHandle) -> None:
    """/healthz answers within 50 ms (p99 of 50) while another client keeps streaming huge headers."""
    address = urlsplit(service.url)
    streamer = subprocess.Popen(  # noqa: S603 - this interpreter, running the code above
        [sys.executable, "-c", STREAMER, str(address.hostname), str(address.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert streamer.stdout is not None
        assert streamer.stdout.readline().strip() == "431"  # streaming has begun
        latencies = []
        with httpx.Client(base_url=service.url) as client:
            client.get("/healthz")  # connected before measuring
            for _ in range(50):
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
    finally:
        streamer.kill()
        answers = streamer.communicate()[0].split()
    assert answers.count("431") >= 2, answers  # refused again and again while measured
    p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1]
    assert p99 < 0.050, f"p99 {p99 * 1000:.1f} ms"


def test_a_connection_that_sends_nothing_is_closed_after_the_keep_alive_timeout(
    service: ServiceHandle,
) -> None:
    """A connection on which no byte is ever sent is closed after the keep-alive timeout."""
    options = server_options(service.settings) | {"timeout_keep_alive": 0.5}
    with serve_in_thread(Litestar([healthz], logging_config=None), **options) as url, connect(url) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 2


def test_a_url_httptools_cannot_parse_is_answered_400(
    service: ServiceHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """A request line whose URL httptools cannot parse is answered 400, as uvicorn answers it, not dropped."""
    [answer] = exchange(service, b"GET http://[::1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (answer.status, answer.problem()["code"]) == (400, "bad_request")
    # asyncio logs the exception of a protocol whose connection it drops
    assert [record.getMessage() for record in caplog.records if record.name == "asyncio"] == []


def test_a_client_awaiting_100_continue_has_a_whole_timeout_from_when_the_app_asks_for_the_body(
    echo_url: str,
) -> None:
    """A client kept waiting for 100 Continue past the client timeout, then slow with its body, is served."""
    asked_after = 1.5 * ECHO_TIMEOUT  # the app asks for the body only after 1.5 client timeouts
    with connect(echo_url) as sock:
        sock.sendall(
            b"POST /echo?wait=%g HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n" % asked_after
            + b"Content-Length: 5\r\nConnection: close\r\n\r\n"
        )
        interim = bytearray()
        while not interim.endswith(b"\r\n\r\n") and (chunk := sock.recv(1)):
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        # Slow on purpose: ending 2.1 timeouts after the head, the body is in time only if the
        # client's time is counted from the 100 Continue.
        time.sleep(0.6 * ECHO_TIMEOUT)
        sock.sendall(b"hello")
        [answer] = parse_answers(read_until_closed(sock))
    assert (answer.status, answer.body) == (200, b"hello")


def test_a_second_request_on_a_kept_alive_connection_is_served(echo_url: str) -> None:
    """A second request on a kept-alive connection is served, the idle time before it not counted."""
    with connect(echo_url) as sock:
        sock.sendall(post_echo(b"first", close=False))
        first = read_answer(sock)
        time.sleep(ECHO_TIMEOUT + 0.05)  # idle for longer than a request may take
        sock.sendall(post_echo(b"second"))
        [second] = parse_answers(read_until_closed(sock))
    assert [(a.status, a.body) for a in (first, second)] == [(200, b"first"), (200, b"second")]


def test_a_chunked_request_body_is_served(echo_url: str) -> None:
    """A body sent in chunks (Transfer-Encoding: chunked), the first with the head, reaches the app whole."""
    with connect(echo_url) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n"
        )
        sock.sendall(b"6\r\n world\r\n0\r\n\r\n")
        [answer] = parse_answers(read_until_closed(sock))
    assert (answer.status, answer.body) == (200, b"hello world")


def test_a_slow_client_finishing_inside_the_client_timeout_is_served(service: ServiceHandle) -> None:
    """A head sent in three parts 0.3 s apart, complete 0.6 s into the 1 s client timeout, is served."""
    parts = [b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"]
    with connect(service.url) as sock:
        for n, part in enumerate(parts):
            if n:
                time.sleep(0.3)  # a slow client, not a wait for the server
            sock.sendall(part)
        [answer] = parse_answers(read_until_closed(sock))
    assert answer.status == 200


def test_a_request_begun_in_the_read_that_ended_the_one_before_still_gets_its_408(echo_url: str) -> None:
    """A request whose head came in the same read as the end of the request before, and whose body
    never comes, is answered 408 after the client timeout instead of holding the connection."""
    with connect(echo_url) as sock:
        started = time.monotonic()
        sock.sendall(
            post_echo(b"first", close=False)
            + b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n"
        )
        answers = parse_answers(read_until_closed(sock))
        elapsed = time.monotonic() - started
    assert [(a.status, a.body) for a in answers[:1]] == [(200, b"first")]
    assert [a.status for a in answers[1:]] == [408]
    assert elapsed < ECHO_TIMEOUT + 1.5


def test_a_pipelined_request_refused_while_an_answer_is_owed_sends_nothing_ahead_of_it(echo_url: str) -> None:
    """A pipelined request too slow with its body, while the request before it is still being
    answered, gets no answer ahead of that one: the answer owed goes out whole, then the connection
    closes."""
    with connect(echo_url) as sock:
        sock.sendall(
            b"POST /echo?hold=%g HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nfirst"
            % (4 * ECHO_TIMEOUT)
            + b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nse"
        )
        answers = parse_answers(read_until_closed(sock))
    assert [(a.status, a.body) for a in answers] == [(200, b"first")]


def test_a_malformed_request_pipelined_behind_one_being_answered_sends_nothing_ahead_of_it(
    echo_url: str,
) -> None:
    """A request that is not valid HTTP, pipelined behind one still being answered, gets no answer
    ahead of that one (whose call may have been placed): the answer owed goes out, then the close."""
    with connect(echo_url) as sock:
        sock.sendall(
            b"POST /echo?wait=%g HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nfirst"
            % (ECHO_TIMEOUT / 2)
            + b"GET /healthz HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n"
        )
        answers = parse_answers(read_until_closed(sock))
    assert [(a.status, a.body) for a in answers] == [(200, b"first")]


H2C_OFFER = (
    b"Connection: Upgrade, HTTP2-Settings, keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQ\r\n"
)


@pytest.mark.parametrize("apart", [False, True], ids=["one write", "head then body"])
def test_a_request_offering_an_h2c_upgrade_is_served_as_http_1_1_with_its_body(
    echo_url: str, apart: bool
) -> None:
    """A request offering an upgrade to h2c (Java's HttpClient does by default) is served as the
    HTTP/1.1 request it also is, body included, and the connection goes on serving."""
    offered = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n" + H2C_OFFER + b"Content-Length: 5\r\n\r\n"
    with connect(echo_url) as sock:
        sock.sendall(offered if apart else offered + b"first")
        if apart:
            time.sleep(0.05)
            sock.sendall(b"first")
        sock.sendall(post_echo(b"again"))
        answers = parse_answers(read_until_closed(sock))
    assert [(a.status, a.body) for a in answers] == [(200, b"first"), (200, b"again")]


def test_many_pipelined_requests_offering_an_upgrade_are_all_served(echo_url: str) -> None:
    """Hundreds of pipelined requests offering an upgrade, in one write, are each answered (each
    is read again without its offer, in a loop rather than one nested call per request)."""
    offer = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
    with connect(echo_url) as sock:
        sock.sendall(offer * 700 + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answers = parse_answers(read_until_closed(sock))
    assert len(answers) == 701


def test_a_connect_request_is_refused_400(echo_url: str) -> None:
    """A CONNECT (a tunnel, never served here) is answered 400 bad_request."""
    with connect(echo_url) as sock:
        sock.sendall(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
        [answer] = parse_answers(read_until_closed(sock))
    assert (answer.status, answer.problem()["code"]) == (400, "bad_request")


def test_a_head_following_a_body_in_one_read_is_still_held_to_the_limit(echo_url: str) -> None:
    """A head that arrives in the same read as the end of the body before it (both queued while the
    server held the connection) is refused once over the head limit, not parsed whole and served: the
    answer owed before it goes out, then the connection closes (no 431 can go ahead of it)."""
    huge = head(*[field(b"X-Pad-%d" % n, 8000) for n in range(3 * HEAD_LIMIT // 8000)], close=True)
    with connect(echo_url) as sock:
        sock.sendall(
            b"POST /echo?wait=%g HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nA"
            % (2 * ECHO_TIMEOUT)
            + b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\n"
        )
        time.sleep(ECHO_TIMEOUT / 2)  # the rest waits in the socket while the first is answered
        sock.sendall(b"B" + huge)
        answers = parse_answers(read_until_closed(sock))
    assert [(a.status, a.body) for a in answers] == [(200, b"A"), (200, b"B")]


def test_a_compressed_body_is_refused_415_before_the_app(service: ServiceHandle) -> None:
    """A body sent with a Content-Encoding (gzip, or any but identity) is answered 415
    unsupported_content_encoding and never reaches the app: a gzip body was answered as malformed
    JSON, and a plain body labelled gzip was taken as plain."""
    body = gzip.compress(b'{"phone": "0987654321"}')
    request = (
        b"POST /otp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    [answer] = exchange(service, request)
    assert (answer.status, answer.problem()["code"]) == (415, "unsupported_content_encoding")


def test_a_compressed_body_on_a_kept_alive_connection_still_gets_its_415(echo_url: str) -> None:
    """Refused after a request served on the same connection, a compressed body still gets its own
    415 answer, not a bare close."""
    labelled = post_echo(b"{}", close=False).replace(b"\r\n\r\n", b"\r\nContent-Encoding: br\r\n\r\n", 1)
    with connect(echo_url) as sock:
        sock.sendall(post_echo(b"first", close=False))
        served = b""
        while not served.endswith(b"first"):  # the first answer, whole, before the second request
            served += sock.recv(65536)
        sock.sendall(labelled)
        answers = parse_answers(served + read_until_closed(sock))
    assert [answer.status for answer in answers] == [200, 415]


def test_a_body_in_a_transfer_coding_other_than_chunked_is_refused_501(echo_url: str) -> None:
    """A body sent as `Transfer-Encoding: gzip, chunked` (which the parser takes) is answered 501
    unsupported_transfer_encoding: its bytes would otherwise reach the app still compressed."""
    chunk = gzip.compress(b"{}")
    body = b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n"
    request = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + body
    with connect(echo_url) as sock:
        sock.sendall(request)
        [answer] = parse_answers(read_until_closed(sock))
    assert (answer.status, answer.problem()["code"]) == (501, "unsupported_transfer_encoding")


def test_a_content_encoding_on_a_request_without_a_body_is_no_reason_to_refuse_it(
    service: ServiceHandle,
) -> None:
    """A bodiless GET carrying `Content-Encoding: gzip`, and a body whose Content-Encoding lists only
    identity (or nothing), are served: nothing there is encoded."""
    [bodiless] = exchange(service, head(b"Content-Encoding: gzip"))
    assert bodiless.status == 200
    [zero_length] = exchange(service, head(b"Content-Encoding: gzip", b"Content-Length: 00"))
    assert zero_length.status == 200
    for value in (b"", b"identity, identity"):
        request = (
            b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Encoding: "
            + value
            + b"\r\nContent-Length: 2\r\n\r\n{}"
        )
        [answer] = exchange(service, request)
        assert answer.status == 401  # read as sent, and refused for what it is: no API key
