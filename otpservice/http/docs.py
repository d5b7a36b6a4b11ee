"""The published contract's page: OpenAPI document and Swagger UI at /docs."""

from __future__ import annotations

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ControllerRouterHandler

from otpservice import __version__
from otpservice.settings import Settings


def openapi_config(settings: Settings) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="otpservice",
        version=__version__,
        description="Voice one-time-password verification over TEL4VN Autocall.",
        path="/docs",
        render_plugins=[SwaggerRenderPlugin()],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(type="http", scheme="bearer", description="An API key")
            }
        ),
    )


def docs_routes(settings: Settings) -> list[ControllerRouterHandler]:
    """Routes the docs page needs besides the OpenAPI controller (none yet)."""
    return []
