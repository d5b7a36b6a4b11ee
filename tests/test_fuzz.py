"""Fuzzing the API: no request, however odd, produces a 500 or a non-problem error."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.service import ServiceHandle

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
create_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "phone": st.one_of(
                st.text(max_size=30), st.from_regex(r"\+?84?0?[0-9 \-]{8,12}", fullmatch=True), json_values
            ),
            "code_length": st.one_of(st.integers(-5, 20), json_values),
            "ttl_seconds": st.one_of(st.integers(0, 1000), json_values),
            "metadata": json_values,
        },
    )
    | json_values
)
verify_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.text(max_size=70), json_values),
            "code": st.one_of(st.text(max_size=12), json_values),
        },
    )
    | json_values
)
ids = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#"), min_size=1, max_size=80
)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _assert_sane(status: int, content_type: str, body: Any) -> None:
    assert status < 500, body
    if status >= 400:
        assert content_type.startswith("application/problem+json"), body
        assert isinstance(body, dict)
        assert "code" in body


@FUZZ
@given(body=create_bodies)
def test_create_never_fails_unexpectedly(service: ServiceHandle, body: object) -> None:
    """Any JSON body to POST /otp answers a 2xx or a problem document, never a 500."""
    with service.client() as client:
        response = client.post("/otp", json=body)
    _assert_sane(response.status_code, response.headers.get("content-type", ""), response.json())


@FUZZ
@given(body=verify_bodies)
def test_verify_never_fails_unexpectedly(service: ServiceHandle, body: object) -> None:
    """Any JSON body to POST /verify answers a 2xx or a problem document, never a 500."""
    with service.client() as client:
        response = client.post("/verify", json=body)
    _assert_sane(response.status_code, response.headers.get("content-type", ""), response.json())


@FUZZ
@given(verification_id=ids, action=st.sampled_from(["get", "resend", "cancel"]))
def test_id_paths_never_fail_unexpectedly(service: ServiceHandle, verification_id: str, action: str) -> None:
    """Any id in the path answers a problem document, never a 500."""
    verification_id = quote(verification_id, safe="")
    with service.client() as client:
        if action == "get":
            response = client.get(f"/otp/{verification_id}")
        elif action == "resend":
            response = client.post(f"/otp/{verification_id}/resend")
        else:
            response = client.delete(f"/otp/{verification_id}")
    _assert_sane(response.status_code, response.headers.get("content-type", ""), response.json())


@FUZZ
@given(body=st.binary(max_size=200), send=st.integers(-3, 2000))
def test_callbacks_never_fail_unexpectedly(service: ServiceHandle, body: bytes, send: int) -> None:
    """Any bytes posted as a callback are refused with a problem document, never a 500."""
    with service.client(api_key=None) as client:
        response = client.post(f"/callbacks/autocall/vf_x/{send}/abc", content=body)
    _assert_sane(response.status_code, response.headers.get("content-type", ""), response.json())


@FUZZ
@given(
    body=st.binary(max_size=300), path=st.sampled_from(["/otp", "/verify", "/callbacks/autocall/vf_x/1/abc"])
)
def test_raw_bytes_never_fail_unexpectedly(service: ServiceHandle, body: bytes, path: str) -> None:
    """Any bytes at all (invalid UTF-8 included) posted as JSON answer a problem document, never a 500."""
    with service.client() as client:
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    _assert_sane(response.status_code, response.headers.get("content-type", ""), response.json())


def test_deeply_nested_callbacks_are_refused_not_500(service: ServiceHandle) -> None:
    """A callback nested deeper than the JSON decoder's stack is refused (401: it names no credential
    the service can read), never a 500 (bodies of the JSON endpoints: tests/test_failures.py)."""
    deep = b"[" * 5000 + b"]" * 5000
    with service.client() as client:
        response = client.post(
            "/callbacks/autocall/vf_x/1/abc", content=deep, headers={"content-type": "application/json"}
        )
    _assert_sane(response.status_code, response.headers.get("content-type", ""), response.json())
    assert response.status_code == 401
