"""An overloaded worker refuses checks at once with 503 `overloaded` instead of queueing them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from otpservice.http.edge import SHED_PAUSE_SECONDS
from tests.support.flows import assert_problem, create, heard_code, wrong_code
from tests.support.raw_http import connect, parse_answers, read_answer, read_until_closed
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import API_KEY, ServiceHandle, running_service


@contextmanager
def _saturated(
    redis_url: str, sandbox: SandboxHandle, phone: str, **overrides: Any
) -> Iterator[tuple[ServiceHandle, bytes]]:
    """A worker with one hashing thread, no queue, and that thread held by a check; yields the raw
    request of another check of the same verification."""
    with running_service(redis_url, sandbox.url, hash_workers=1, hash_queue=0, **overrides) as service:
        with service.client() as client:
            vid = create(client, phone)["id"]
            wrong = wrong_code(heard_code(sandbox, phone))
        body = json.dumps({"id": vid, "code": wrong}).encode()
        check = (
            b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        service.hasher.gate.clear()
        held = threading.Thread(target=lambda: _send_check(service, vid, wrong))
        held.start()
        try:
            wait_until(lambda: service.hasher.checks == 1, 10, "the first check on the hashing thread")
            yield service, check
        finally:
            service.hasher.gate.set()
            held.join(timeout=10)


def _send_check(service: ServiceHandle, vid: str, code: str) -> None:
    with service.client() as client:
        client.post("/verify", json={"id": vid, "code": code})


def test_a_check_beyond_the_hash_queue_is_refused_at_once_and_spends_no_attempt(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """With its one hashing thread busy and no queue, a worker answers the next check 503 `overloaded`
    with Retry-After while the first is still held, and only the first check spends an attempt."""
    with running_service(redis_url, sandbox.url, hash_workers=1, hash_queue=0) as service:
        with service.client() as client:
            vid = create(client, "0987650001")["id"]
            wrong = wrong_code(heard_code(sandbox, "0987650001"))
        service.hasher.gate.clear()  # every check now holds the only thread until the gate opens
        held: list[httpx.Response] = []

        def check_held() -> None:
            with service.client() as client:
                held.append(client.post("/verify", json={"id": vid, "code": wrong}))

        first = threading.Thread(target=check_held)
        first.start()
        try:
            wait_until(lambda: service.hasher.checks == 1, 10, "the first check on the hashing thread")
            with service.client() as client:
                refused = client.post("/verify", json={"id": vid, "code": wrong})
                assert not held, "the refusal came only after the held check finished"
        finally:
            service.hasher.gate.set()
            first.join(timeout=10)
        assert_problem(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "1"
        assert held[0].status_code == 200
        with service.client() as client:
            after = client.get(f"/otp/{vid}").json()
        assert after["attempts"] == 1  # the refused check spent nothing
        assert service.hasher.checks == 1
        with service.client() as client:
            scraped = client.get("/metrics").text
        assert "otp_checks_shed_total 1.0" in scraped  # refused before the app read it


def test_a_refused_check_keeps_its_connection_whose_next_request_is_read_a_moment_later(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """The refusal comes at once on a connection that stays open; the client's next request on it is
    read only after SHED_PAUSE_SECONDS (clients that retry at once cannot spin the worker), then
    served as usual."""
    with _saturated(redis_url, sandbox, "0987650002") as (service, check), connect(service.url) as sock:
        # timed from before the check: the pause begins once the server has it, and the refusal may
        # reach this client some milliseconds after that on a busy machine
        sent = time.monotonic()
        sock.sendall(check)
        refused = read_answer(sock)
        assert refused.status == 503
        assert json.loads(refused.body)["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        assert refused.headers.get("connection") != "close"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        served = read_answer(sock)
        assert served.status == 200
        assert time.monotonic() - sent >= SHED_PAUSE_SECONDS * 0.9  # timer granularity


def test_a_refused_check_asking_to_close_is_answered_and_closed(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A check sent with Connection: close is refused 503 and its connection closed after the answer."""
    with _saturated(redis_url, sandbox, "0987650003") as (service, check), connect(service.url) as sock:
        sock.sendall(check.replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nConnection: close\r\n"))
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 503 ")
    assert b"connection: close" in received.lower()
    assert received.endswith(b"}")


def test_a_check_awaiting_100_continue_is_still_refused_by_the_app_side_shedding(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A check that waits for 100 Continue (which the server's own shedding cannot answer from the
    head) is refused 503 `overloaded` by the middleware, before the app reads its body."""
    with _saturated(redis_url, sandbox, "0987650004") as (service, check), connect(service.url) as sock:
        head, _, body = check.partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        refused = read_answer(sock)
        assert refused.status == 503
        assert json.loads(refused.body)["code"] == "overloaded"
        assert refused.headers["connection"] == "close"  # the body may still come: not a next request
        assert body  # never sent: the answer came without it


def test_a_refused_check_whose_body_stops_short_gets_408_on_a_connection_used_before(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A check being refused for load whose body never ends is answered 408, also on a connection
    that served a request before it."""
    with (
        _saturated(redis_url, sandbox, "0987650005", client_timeout_seconds=1.0) as (service, check),
        connect(service.url) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(sock).status == 200
        head, _, body = check.partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n" + body[:5])
        [answer] = parse_answers(read_until_closed(sock))
    assert answer.status == 408
    assert answer.problem()["code"] == "request_timeout"


def test_checks_pipelined_in_one_write_are_refused_and_the_connection_closed(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """Checks pipelined in one write cannot be slowed down by the pause after a refusal: the second
    is refused with Connection: close and the rest are not read."""
    with _saturated(redis_url, sandbox, "0987650006") as (service, check), connect(service.url) as sock:
        sock.sendall(check * 20)
        answers = parse_answers(read_until_closed(sock))
    assert [a.status for a in answers] == [503, 503]
    assert [a.headers.get("connection") for a in answers] == [None, "close"]
