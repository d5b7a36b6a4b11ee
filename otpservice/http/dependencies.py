"""What handlers may ask for by name; provided from the lifespan-managed state."""

from __future__ import annotations

from typing import TypeAlias

from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from otpservice.adapters.storage.scripts import Storage
from otpservice.service.delivery import DeliveryTracker
from otpservice.service.verifications import VerificationService

Verifications: TypeAlias = NamedDependency[VerificationService]
Deliveries: TypeAlias = NamedDependency[DeliveryTracker]
StorageDependency: TypeAlias = NamedDependency[Storage]


def _verifications(state: State) -> VerificationService:
    service: VerificationService = state.verifications
    return service


def _deliveries(state: State) -> DeliveryTracker:
    tracker: DeliveryTracker = state.deliveries
    return tracker


def _storage(state: State) -> Storage:
    storage: Storage = state.storage
    return storage


DEPENDENCIES = {
    "verifications": Provide(_verifications, sync_to_thread=False),
    "deliveries": Provide(_deliveries, sync_to_thread=False),
    "storage": Provide(_storage, sync_to_thread=False),
}
