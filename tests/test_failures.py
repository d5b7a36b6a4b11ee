"""Failures you can debug: an unforeseen error is one log line with its traceback and a 500 problem;
only a request body the decoder cannot read is the client's 400."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from redis import Redis

from otpservice.adapters.storage.keys import verification_key
from otpservice.logs import configure_logging
from tests.support.flows import assert_problem, create
from tests.support.redis_servers import wait_until
from tests.support.sandbox import SandboxHandle
from tests.support.service import API_KEY, ServiceHandle, running_service


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[Redis]:
    """A plain client on the service's Redis, to break a record behind the service's back."""
    client = Redis.from_url(redis_url, decode_responses=False)
    yield client
    client.close()


def _log_lines(service: ServiceHandle) -> list[dict[str, Any]]:
    return [json.loads(line) for line in service.logs.getvalue().splitlines() if line.strip()]


def test_a_corrupt_record_is_a_logged_500_not_a_bad_body(service: ServiceHandle, raw_redis: Redis) -> None:
    """A stored record that is not UTF-8 answers 500 internal_error and logs one request.failed line
    carrying the traceback and the exception's message, and none of the record (no locals)."""
    with service.client() as client:
        verification_id = create(client)["id"]
        # the call's callback reads the record too: let it land first
        wait_until(
            lambda: client.get(f"/otp/{verification_id}").json()["delivery"]["status"] == "answered",
            5,
            "the call's callback",
        )
        key = verification_key(verification_id)
        stored_hash = raw_redis.hget(key, "hc")
        assert isinstance(stored_hash, bytes), "the record keeps its code's hash under hc"
        raw_redis.hset(key, "dci", b"\xff\xfe not utf-8")
        response = client.get(f"/otp/{verification_id}")
    assert_problem(response, 500, "internal_error")
    failures = [line for line in _log_lines(service) if line["event"] == "request.failed"]
    assert len(failures) == 1, failures
    failure = failures[0]
    assert failure["level"] == "error"
    assert failure["error"] == "UnicodeDecodeError"
    assert failure["path"] == "/otp/{verification_id}"
    trace = failure["exception"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "otpservice/adapters/storage/store.py" in trace
    assert trace.rstrip().endswith(
        "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"
    )
    assert stored_hash.decode() not in service.logs.getvalue()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 10_000 + b"]" * 10_000, "the body is nested too deeply"),
        (b'{"phone": "\xff"}', "the body is not UTF-8"),
    ],
    ids=["nested-10000-deep", "not-utf-8"],
)
def test_a_body_the_decoder_gives_up_on_is_400_and_not_logged_as_a_failure(
    service: ServiceHandle, body: bytes, detail: str
) -> None:
    """A JSON body nested 10 000 deep or not UTF-8 is the client's 400 malformed_body, on every
    endpoint that reads a JSON body, and no request.failed is logged."""
    with service.client() as client:
        for path in ("/otp", "/verify", "/otp/vf_0/resend"):
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert assert_problem(response, 400, "malformed_body")["detail"] == detail, path
    assert not [line for line in _log_lines(service) if line["event"] == "request.failed"]


def _judge(code: str) -> None:
    raise ValueError("the check failed")


def test_console_logs_show_a_plain_traceback_without_locals() -> None:
    """The dev console renderer logs a failure's plain traceback, never its frames' local
    variables (rich, installed for the dev tools, would print them, codes included)."""
    stream = io.StringIO()
    configure_logging("INFO", json=False, stream=stream)
    try:
        code = str(424_242)  # a code in a local variable of the failing frame
        try:
            _judge(code)
        except ValueError as exc:
            structlog.get_logger("otpservice.http.problems").error("request.failed", exc_info=exc)
    finally:
        configure_logging("INFO")
    text = stream.getvalue()
    assert "Traceback (most recent call last):" in text
    assert "ValueError: the check failed" in text
    assert "424242" not in text


def test_a_client_gone_before_its_body_is_not_a_server_failure(
    redis_url: str, sandbox: SandboxHandle
) -> None:
    """A client the server times out mid-body gets 408, and the log says the client left (info), with
    no request.failed error."""
    with running_service(redis_url, sandbox.url, client_timeout_seconds=0.5) as service:
        host, port = service.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"id": "vf_'
            )
            sock.settimeout(5)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 ")
        wait_until(lambda: '"http.client_gone"' in service.logs.getvalue(), 5, "the client_gone line")
        assert not [line for line in _log_lines(service) if line.get("event") == "request.failed"]
