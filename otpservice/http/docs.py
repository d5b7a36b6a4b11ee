"""The published contract's page: OpenAPI document and Swagger UI at /docs, served without any CDN.

Swagger UI's scripts, stylesheet and icon come from a Python package and are served under
/docs/assets, so the page works on a machine with no Internet access and loads nothing from anyone
else. ``OTP_DOCS=false`` removes the page, its assets and the schema documents (they answer 404).
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router
from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler
from openapi_ui_bundles import swagger_ui

from otpservice import __version__
from otpservice.http.problems import problem_body
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
        # Litestar answers a page under /docs it does not know with an HTML page of its own
        openapi_router=Router(
            DOCS_PATH, route_handlers=[], include_in_schema=False, after_request=_as_problem
        ),
        render_plugins=[
            SwaggerRenderPlugin(
                js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
            ),
            YamlRenderPlugin(),  # /docs/openapi.yaml (the first plugin is the page at /docs itself)
        ],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(type="http", scheme="bearer", description="An API key")
            }
        ),
    )


async def _as_problem(response: Response[object]) -> Response[object]:
    """Litestar's HTML "not found" page under /docs as the service's 404 problem, as everywhere."""
    if response.status_code == 404 and response.media_type == MediaType.HTML:
        body = problem_body(404, "not_found", "Not found", "there is no such documentation page")
        return Response(body, status_code=404, media_type="application/problem+json")
    return response


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
