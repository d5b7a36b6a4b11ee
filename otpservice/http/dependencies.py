"""What handlers may ask for by name; provided from the lifespan-managed state."""

from __future__ import annotations

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

Verifications: TypeAlias = NamedDependency[VerificationService]
Deliveries: TypeAlias = NamedDependency[DeliveryTracker]
StorageDependency: TypeAlias = NamedDependency[Storage]
TenantDependency: TypeAlias = NamedDependency[Tenant]
IdempotencyDependency: TypeAlias = NamedDependency[Idempotency]


def _verifications(state: State) -> VerificationService:
    service: VerificationService = state.verifications
    return service


def _deliveries(state: State) -> DeliveryTracker:
    tracker: DeliveryTracker = state.deliveries
    return tracker


def _storage(state: State) -> Storage:
    storage: Storage = state.storage
    return storage


def _tenant(request: Request[Any, Any, Any]) -> Tenant:
    return request_tenant(request)


def _idempotency(state: State) -> Idempotency:
    idempotency: Idempotency = state.idempotency
    return idempotency


DEPENDENCIES = {
    "verifications": Provide(_verifications, sync_to_thread=False),
    "deliveries": Provide(_deliveries, sync_to_thread=False),
    "storage": Provide(_storage, sync_to_thread=False),
    "tenant": Provide(_tenant, sync_to_thread=False),
    "idempotency": Provide(_idempotency, sync_to_thread=False),
}
