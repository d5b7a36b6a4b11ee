"""The published contract's page: OpenAPI document and Swagger UI at /docs, served without any CDN.

Swagger UI's scripts, stylesheet and icon come from a Python package and are served under
/docs/assets, so the page works on a machine with no Internet access and loads nothing from anyone
else. ``OTP_DOCS=false`` removes the page, its assets and the schema documents (they answer 404).
"""

from __future__ import annotations

from pathlib import Path

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler
from openapi_ui_bundles import swagger_ui

from otpservice import __version__
from otpservice.settings import Settings

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
SWAGGER_UI_ASSETS: Path = swagger_ui.static_path


def openapi_config(settings: Settings) -> OpenAPIConfig | None:
    """The OpenAPI document and its page at /docs; None (no document is served) when docs are off."""
    if not settings.docs:
        return None
    return OpenAPIConfig(
        title="otpservice",
        version=__version__,
        description="Voice one-time-password verification over TEL4VN Autocall.",
        path=DOCS_PATH,
        render_plugins=[
            SwaggerRenderPlugin(
                js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
            )
        ],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(type="http", scheme="bearer", description="An API key")
            }
        ),
    )


def docs_routes(settings: Settings) -> list[ControllerRouterHandler]:
    """Swagger UI's files, which the page at /docs loads; not part of the published contract."""
    if not settings.docs:
        return []
    return [
        create_static_files_router(
            path=ASSETS_PATH,
            directories=[SWAGGER_UI_ASSETS],
            name="docs_assets",
            include_in_schema=False,
        )
    ]
