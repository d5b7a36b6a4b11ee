"""What handlers may ask for by name; provided from the lifespan-managed state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from otpservice.adapters.storage.scripts import Storage
from otpservice.http.auth import request_tenant
from otpservice.http.idempotency import Idempotency
from otpservice.service.delivery import DeliveryTracker
from otpservice.service.verifications import VerificationService
from otpservice.tenants import Tenant


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking (the tenant whose API key the request carries) and the use cases it may call.

    One dependency rather than three: Litestar resolves sibling dependencies concurrently, in an
    anyio task group with a task each, which cost more than the lookups themselves on every request.
    """

    tenant: Tenant
    verifications: VerificationService
    idempotency: Idempotency


CallerDependency: TypeAlias = NamedDependency[Caller]
Deliveries: TypeAlias = NamedDependency[DeliveryTracker]
StorageDependency: TypeAlias = NamedDependency[Storage]


def _caller(request: Request[Any, Any, Any]) -> Caller:
    state = request.app.state
    return Caller(request_tenant(request), state.verifications, state.idempotency)


def _deliveries(state: State) -> DeliveryTracker:
    tracker: DeliveryTracker = state.deliveries
    return tracker


def _storage(state: State) -> Storage:
    storage: Storage = state.storage
    return storage


DEPENDENCIES = {
    "caller": Provide(_caller, sync_to_thread=False),
    "deliveries": Provide(_deliveries, sync_to_thread=False),
    "storage": Provide(_storage, sync_to_thread=False),
}
