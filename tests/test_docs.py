"""/docs: Swagger UI served by the service itself, so the page works offline; OTP_DOCS=false removes it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.sandbox import SandboxHandle
from tests.support.service import ServiceHandle, running_service

CONTENT_TYPES = {
    ".js": {"text/javascript", "application/javascript"},
    ".css": {"text/css"},
    ".png": {"image/png"},
}


@pytest.fixture
def service_without_docs(redis_url: str, sandbox: SandboxHandle) -> Iterator[ServiceHandle]:
    """The service with OTP_DOCS=false."""
    with running_service(redis_url, sandbox.url, docs=False) as handle:
        yield handle


def linked_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)


def test_docs_page_loads_only_what_the_service_serves(service: ServiceHandle) -> None:
    """Every script, stylesheet and icon of /docs is a local path that answers 200 with its type."""
    with service.client(api_key=None) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        urls = linked_urls(page.text)
        assert len(urls) == 4, urls  # stylesheet, two scripts, icon
        for url in urls:
            assert url.startswith("/docs/assets/"), url
            asset = client.get(url)
            assert asset.status_code == 200, url
            kind = asset.headers["content-type"].split(";")[0]
            assert kind in CONTENT_TYPES[url[url.rfind(".") :]], (url, kind)
            assert len(asset.content) > 100, url


def test_docs_page_can_render_the_served_document(service: ServiceHandle) -> None:
    """The Swagger UI served knows the OpenAPI version the document declares (3.1 needs Swagger UI 5)."""
    with service.client(api_key=None) as client:
        version = client.get("/docs/openapi.json").json()["openapi"]
        script = client.get("/docs/assets/swagger-ui-bundle.js").text
    assert version.startswith("3.1")
    assert "isOAS31" in script


def test_docs_can_be_turned_off(service_without_docs: ServiceHandle) -> None:
    """With OTP_DOCS=false the page, its assets and the schema documents answer 404 problem+json."""
    with service_without_docs.client(api_key=None) as client:
        for path in ("/docs", "/docs/swagger", "/docs/openapi.json", "/docs/assets/swagger-ui.css"):
            answer = client.get(path)
            assert answer.status_code == 404, path
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "not_found"
        assert client.get("/healthz").status_code == 200


def test_the_contract_is_served_as_yaml_and_unknown_doc_pages_are_problems(service: ServiceHandle) -> None:
    """/docs/openapi.yaml serves the contract; a page under /docs that does not exist is 404 problem+json."""
    with service.client(api_key=None) as client:
        contract = client.get("/docs/openapi.yaml")
        missing = client.get("/docs/redoc")
    assert contract.status_code == 200
    assert "\nopenapi: 3.1" in contract.text
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not_found"
