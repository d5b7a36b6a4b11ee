"""The app factory: settings in, a Litestar app out, with its clients owned by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import httpx
import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusController

from otpservice.adapters.autocall.client import AutocallClient, create_http_client
from otpservice.adapters.storage.budget import CallBudgets
from otpservice.adapters.storage.clock import StorageClock
from otpservice.adapters.storage.connection import connect
from otpservice.adapters.storage.health import warn_about_eviction
from otpservice.adapters.storage.idempotency import IdempotencyRecords
from otpservice.adapters.storage.outbox import EventOutbox
from otpservice.adapters.storage.schedule import CallSchedule
from otpservice.adapters.storage.scripts import Storage
from otpservice.adapters.storage.store import NumberPolicy, VerificationStore
from otpservice.domain.callback_auth import CallbackSigner
from otpservice.domain.clock import Clock, SystemClock
from otpservice.domain.codes import CodeHasher, RandomBelow
from otpservice.http.auth import require_metrics_key
from otpservice.http.controllers.callbacks import autocall_callback
from otpservice.http.controllers.health import healthz, readyz
from otpservice.http.controllers.verifications import VerificationController, VerifyController
from otpservice.http.dependencies import DEPENDENCIES
from otpservice.http.docs import docs_routes, openapi_config
from otpservice.http.head import HeadServingLitestar
from otpservice.http.idempotency import Idempotency
from otpservice.http.observe import observe_middleware
from otpservice.http.problems import EXCEPTION_HANDLERS, problem_details_plugin
from otpservice.http.request import OtpRequest
from otpservice.http.schemas import ClosedStructSchemaPlugin, webhook_event_body
from otpservice.http.shedding import shed_checks_middleware
from otpservice.redis_url import parse_redis_url
from otpservice.service.background import run_rounds
from otpservice.service.delivery import DeliveryTracker
from otpservice.service.expiry import ExpirySweep
from otpservice.service.hashing import HashingPool
from otpservice.service.placement import CallPlacer, VoiceRoute
from otpservice.service.provider_health import ProviderProbe
from otpservice.service.reconciler import reconcile_forever
from otpservice.service.repairs import RepairQueue
from otpservice.service.verifications import VerificationService
from otpservice.service.webhooks import POLL_SECONDS, Endpoint, WebhookDispatcher
from otpservice.settings import Settings
from otpservice.tenants import TenantDirectory, hash_api_key

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Seams:
    """Every external thing the app touches besides settings; tests swap these, nothing is patched."""

    clock: Clock | None = None  # None: the storage server's clock (StorageClock), as in production
    randbelow: RandomBelow = secrets.randbelow
    hasher: CodeHasher | None = None
    provider_transport: httpx.AsyncBaseTransport | None = None
    tls: ssl.SSLContext | None = None  # the trust store for the provider (default: the system's)


async def _finish(tasks: list[asyncio.Task[None]], stop: asyncio.Event, grace_seconds: float) -> None:
    """Ask background tasks to stop, let them finish what they are doing, cancel only stragglers."""
    stop.set()
    _done, late = await asyncio.wait(tasks, timeout=grace_seconds)
    for task in late:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class MetricsController(PrometheusController):
    """Prometheus exposition at /metrics: for the scraper, not in the published API.

    Under ``serve --workers N`` the controller reads every worker's files in PROMETHEUS_MULTIPROC_DIR
    (set by ``serve``), so each scrape answers the totals of all workers.
    """

    include_in_schema = False
    guards = [require_metrics_key]


def _voice_routes(
    settings: Settings, http: httpx.AsyncClient, default_caller: AutocallClient
) -> dict[str, VoiceRoute]:
    """Each tenant's campaign, caller number and template, where it overrides the global ones."""
    routes = {}
    for tenant in settings.all_tenants():
        caller = default_caller
        if tenant.campaign_id or tenant.caller:
            autocall = replace(
                settings.autocall,
                campaign_id=tenant.campaign_id or settings.autocall.campaign_id,
                caller=tenant.caller or settings.autocall.caller,
            )
            caller = AutocallClient.from_settings(autocall, http)
        routes[tenant.name] = VoiceRoute(caller, tenant.template or settings.autocall.template)
    return routes


def _webhook_endpoints(settings: Settings) -> dict[str, Endpoint]:
    return {
        tenant.name: Endpoint.of(tenant.webhook_url, tenant.webhook_secret)
        for tenant in settings.all_tenants()
        if tenant.webhook_url and tenant.webhook_secret
    }


def _request_bound_seconds(settings: Settings) -> float:
    """How long one start or resend can take at most: a few storage steps and one provider call."""
    # a placement: its token and its call, each within one exchange
    return 4 * settings.storage_bound_seconds + 2 * settings.autocall.exchange_bound_seconds + 30


def stop_bound_seconds(settings: Settings) -> float:
    """How long a worker may take to stop after SIGTERM, at worst: a start or resend begun just
    before it runs to its end (the server waits for requests in flight), then the lifespan closes:
    background loops (one storage operation), pending repairs (their 2 s grace), webhook deliveries
    under way (a send within its timeouts, then its record). The deploy files' grace periods cover it.
    """
    delivery = 2 * settings.webhook_timeout_seconds + settings.storage_bound_seconds
    return _request_bound_seconds(settings) + settings.storage_bound_seconds + 2 + delivery


def create_app(settings: Settings, seams: Seams | None = None) -> Litestar:
    seams = seams or Seams()

    @asynccontextmanager
    async def clients(app: Litestar) -> AsyncIterator[None]:
        # Everything opened here is closed in reverse order, also when a later step fails.
        async with contextlib.AsyncExitStack() as opened:
            target = parse_redis_url(settings.redis_url)
            redis = connect(target, timeout_seconds=settings.redis_timeout_seconds)
            storage = Storage(redis, operation_timeout_seconds=settings.storage_bound_seconds)
            opened.push_async_callback(storage.close)
            storage_clock = StorageClock(storage) if seams.clock is None else None
            if storage_clock is not None:
                await storage_clock.synchronise()  # on failure, the machine's clock until it succeeds
            clock: Clock = seams.clock or storage_clock or SystemClock()
            app.state.clock = clock
            if seams.provider_transport is None:
                http = create_http_client(settings.autocall, seams.tls)
            else:
                http = httpx.AsyncClient(transport=seams.provider_transport)
            opened.push_async_callback(http.aclose)
            hashing = HashingPool(
                seams.hasher or CodeHasher(settings.pepper, settings.argon2),
                settings.hash_workers,
                settings.hash_queue,
            )
            opened.callback(hashing.close)
            app.state.hashing = hashing
            one_hash = await hashing.size_queue()
            log.info(
                "hashing.ready",
                threads=settings.hash_workers,
                queue=hashing.queue,
                hash_ms=round(one_hash * 1000, 1),
            )
            repairs = RepairQueue()
            opened.push_async_callback(repairs.close)
            caller = AutocallClient.from_settings(settings.autocall, http)
            opened.push_async_callback(caller.close)  # before the HTTP client closes
            # Asked at once: a refused secret key or an unreachable provider shows in the log and
            # in /readyz before the first user is called.
            app.state.provider = ProviderProbe(caller, clock)
            app.state.provider.start_check()
            opened.push_async_callback(app.state.provider.stop)
            signer = CallbackSigner(settings.pepper)
            policy = NumberPolicy(call_limits=settings.phone_limits, failure_lock=settings.failure_lock)
            events_waiting = asyncio.Event()  # set after each state change: the dispatcher looks at once
            store = VerificationStore(storage, settings.retention_seconds, policy, events_waiting.set)
            budgets = CallBudgets(storage)
            routes = _voice_routes(settings, http, caller)
            for tenant_caller in {route.caller for route in routes.values()} - {caller}:
                opened.push_async_callback(tenant_caller.close)
            placer = CallPlacer(
                settings=settings,
                store=store,
                budgets=budgets,
                routes=routes,
                default_route=VoiceRoute(caller, settings.autocall.template),
                clock=clock,
                signer=signer,
                repairs=repairs,
            )
            app.state.storage = storage
            app.state.verifications = VerificationService(
                settings=settings,
                store=store,
                budgets=budgets,
                placer=placer,
                hashing=hashing,
                clock=clock,
                repairs=repairs,
                randbelow=seams.randbelow,
            )
            app.state.idempotency = Idempotency(
                IdempotencyRecords(storage),
                repairs,
                lease_seconds=_request_bound_seconds(settings),
                pepper=settings.pepper,
            )
            app.state.deliveries = DeliveryTracker(
                settings=settings,
                store=store,
                schedule=CallSchedule(storage),
                caller=caller,
                clock=clock,
                signer=signer,
            )
            endpoints = _webhook_endpoints(settings)
            receiver_timeout = settings.webhook_timeout_seconds
            webhook_http = httpx.AsyncClient(
                timeout=httpx.Timeout(receiver_timeout, connect=min(5.0, receiver_timeout)),
                follow_redirects=False,
            )
            opened.push_async_callback(webhook_http.aclose)
            dispatcher = WebhookDispatcher(
                outbox=EventOutbox(storage),
                http=webhook_http,
                clock=clock,
                endpoints=endpoints,
                render=lambda event: webhook_event_body(event.type, event.at, event.verification),
                retry_hours=settings.webhook_retry_hours,
                receiver_timeout_seconds=receiver_timeout,
                on_settled=events_waiting.set,
            )
            sweep = ExpirySweep(store, clock, settings.reconcile_interval_seconds)
            stop = asyncio.Event()
            interval = settings.reconcile_interval_seconds
            background = [
                asyncio.create_task(reconcile_forever(app.state.deliveries, interval, stop)),
                asyncio.create_task(run_rounds("expiry_sweep", sweep.sweep_round, interval, stop)),
                asyncio.create_task(warn_about_eviction(storage)),
            ]
            if storage_clock is not None:
                background.append(asyncio.create_task(storage_clock.keep_synchronised(stop)))
            # Sentinel only; a new master's clock is read at once, so every worker steps together
            on_master_changed = storage_clock.synchronise if storage_clock is not None else None
            background.append(asyncio.create_task(storage.follow_master(stop, on_master_changed)))
            if endpoints:  # no tenant with a webhook: no event is ever recorded, nothing to poll for
                background.append(
                    asyncio.create_task(
                        run_rounds("webhooks", dispatcher.dispatch_round, POLL_SECONDS, stop, events_waiting)
                    )
                )
            opened.push_async_callback(dispatcher.drain)  # after the loops stop: deliveries under way end
            opened.push_async_callback(_finish, background, stop, settings.storage_bound_seconds)
            log.info("storage.target", redis=target.describe())
            log.info("tenants.loaded", tenants=sorted(t.name for t in app.state.tenants))
            for notice in settings.notices:
                log.warning("settings.notice", notice=notice)
            yield

    return HeadServingLitestar(
        route_handlers=[
            VerificationController,
            VerifyController,
            autocall_callback,
            healthz,
            readyz,
            MetricsController,
            *docs_routes(settings),
        ],
        lifespan=[clients],
        dependencies=DEPENDENCIES,
        state=State(
            {
                "settings": settings,
                "tenants": TenantDirectory(settings.all_tenants()),
                "metrics_key_hashes": frozenset(hash_api_key(key) for key in settings.metrics_keys),
            }
        ),
        plugins=[problem_details_plugin(), ClosedStructSchemaPlugin()],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[shed_checks_middleware, observe_middleware],
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=openapi_config(settings),
        request_class=OtpRequest,
        # Logging is configured once by otpservice.logs; Litestar's own config would replace it.
        logging_config=None,
        debug=False,
    )
