"""HEAD is answered wherever GET is: the same status and headers, no body."""

from __future__ import annotations

from otpservice.http.observe import REQUESTS
from tests.support.flows import create
from tests.support.redis_servers import wait_until
from tests.support.service import ServiceHandle


def test_head_on_a_get_route_answers_its_head_without_the_body(service: ServiceHandle) -> None:
    """HEAD /healthz and HEAD /otp/{id} answer 200 with the GET's content type and length, and no body."""
    with service.client() as client:
        verification = create(client, "0912345400")
        for path in ("/healthz", f"/otp/{verification['id']}"):
            got, head = client.get(path), client.head(path)
            assert head.status_code == got.status_code == 200, path
            assert head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
            assert head.headers["content-length"] == str(len(got.content)), path


def test_head_answers_a_get_route_s_errors_as_get_does(service: ServiceHandle) -> None:
    """HEAD on an unknown verification is 404 problem+json and HEAD /metrics without its key 401,
    each with no body; HEAD on a POST-only route is 405 naming what is allowed."""
    with service.client() as client, service.client(api_key=None) as anonymous:
        missing = client.head("/otp/vf_doesnotexist")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.content == b""
        assert anonymous.head("/metrics").status_code == 401
        not_allowed = client.head("/verify")
        assert not_allowed.status_code == 405
        assert "POST" in not_allowed.headers["allow"]
        assert not_allowed.content == b""


def test_allow_names_head_wherever_it_names_get(service: ServiceHandle) -> None:
    """A 405 on a GET route and an OPTIONS answer list HEAD beside GET in Allow."""
    with service.client() as client:
        for answer in (client.put("/healthz"), client.options("/healthz")):
            allowed = [method.strip() for method in answer.headers["allow"].split(",")]
            assert "GET" in allowed, answer.headers["allow"]
            assert "HEAD" in allowed, answer.headers["allow"]


def test_a_head_request_is_counted_and_logged_as_head(service: ServiceHandle) -> None:
    """The access log and the request metrics name a HEAD request HEAD, not the GET it is served as."""
    with service.client(api_key=None) as anonymous:
        before = REQUESTS.labels("HEAD", "/healthz", "200", "otpservice")._value.get()
        assert anonymous.head("/healthz").status_code == 200
    # counted, then logged, once the answer has gone
    wait_until(
        lambda: REQUESTS.labels("HEAD", "/healthz", "200", "otpservice")._value.get() > before,
        5,
        "the HEAD request counted",
    )
    wait_until(lambda: '"method":"HEAD"' in service.logs.getvalue().replace(" ", ""), 5, "its access line")
