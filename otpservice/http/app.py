"""The app factory: settings in, a Litestar app out, with its clients owned by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from redis.asyncio import BlockingConnectionPool, Redis

from otpservice import __version__
from otpservice.adapters.autocall.client import AutocallClient, create_http_client
from otpservice.adapters.redis_store import VerificationStore
from otpservice.domain.callback_auth import CallbackSigner
from otpservice.domain.clock import Clock, SystemClock
from otpservice.domain.codes import CodeHasher, RandomBelow
from otpservice.http.access_log import access_log_middleware
from otpservice.http.auth import require_api_key
from otpservice.http.controllers.callbacks import autocall_callback
from otpservice.http.controllers.health import healthz, readyz
from otpservice.http.controllers.verifications import VerificationController, VerifyController
from otpservice.http.dependencies import DEPENDENCIES
from otpservice.http.problems import EXCEPTION_HANDLERS, problem_details_plugin
from otpservice.service.hashing import HashingPool
from otpservice.service.reconciler import reconcile_forever
from otpservice.service.verifications import VerificationService
from otpservice.settings import Settings

MAX_BODY_BYTES = 64 * 1024
# Paths are grouped by route template: raw callback paths carry credentials and would explode cardinality.
_PROMETHEUS = PrometheusConfig(app_name="otpservice", prefix="otp_http", group_path=True)


@dataclass(frozen=True)
class Seams:
    """Every external thing the app touches besides settings; tests swap these, nothing is patched."""

    clock: Clock = field(default_factory=SystemClock)
    randbelow: RandomBelow = secrets.randbelow
    hasher: CodeHasher | None = None
    provider_transport: httpx.AsyncBaseTransport | None = None


class MetricsController(PrometheusController):
    """Prometheus exposition at /metrics: for the scraper (with an API key), not in the published API."""

    include_in_schema = False
    guards = [require_api_key]


def create_app(settings: Settings, seams: Seams | None = None) -> Litestar:
    seams = seams or Seams()

    @asynccontextmanager
    async def clients(app: Litestar) -> AsyncIterator[None]:
        # A blocking pool queues requests beyond its size instead of failing them under bursts.
        redis = Redis.from_pool(
            BlockingConnectionPool.from_url(settings.redis_url, max_connections=64, timeout=5)
        )
        if seams.provider_transport is None:
            http = create_http_client(settings.autocall)
        else:
            http = httpx.AsyncClient(transport=seams.provider_transport)
        hashing = HashingPool(
            seams.hasher or CodeHasher(settings.pepper, settings.argon2), settings.hash_workers
        )
        app.state.redis = redis
        app.state.verifications = VerificationService(
            settings=settings,
            store=VerificationStore(redis, settings.retention_seconds),
            caller=AutocallClient.from_settings(settings.autocall, http),
            hashing=hashing,
            clock=seams.clock,
            signer=CallbackSigner(settings.pepper),
            randbelow=seams.randbelow,
        )
        reconciler = asyncio.create_task(
            reconcile_forever(app.state.verifications, settings.reconcile_interval_seconds)
        )
        try:
            yield
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
            hashing.close()
            await http.aclose()
            await redis.aclose()

    return Litestar(
        route_handlers=[
            VerificationController,
            VerifyController,
            autocall_callback,
            healthz,
            readyz,
            MetricsController,
        ],
        lifespan=[clients],
        dependencies=DEPENDENCIES,
        state=State({"settings": settings}),
        plugins=[problem_details_plugin()],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[access_log_middleware, _PROMETHEUS.middleware],
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(
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
        ),
        # Logging is configured once by otpservice.logs; Litestar's own config would replace it.
        logging_config=None,
        debug=False,
    )
