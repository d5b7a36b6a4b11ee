"""Whether the voice provider takes our secret key: checked at start, then kept fresh for /readyz."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from enum import StrEnum

import structlog

from otpservice.adapters.autocall.client import AutocallClient
from otpservice.adapters.autocall.models import (
    AutocallError,
    ProviderAuthFailed,
    ProviderRejectedRequest,
    ProviderUnavailable,
)
from otpservice.domain.clock import Clock

log = structlog.get_logger(__name__)

# Without calls to learn from, the provider is asked for a new token this often (per worker).
RECHECK_SECONDS = 30.0


class ProviderState(StrEnum):
    OK = "ok"
    UNCHECKED = "unchecked"  # the first check has not finished
    REFUSED = "refused"  # the provider refuses the secret key: calls cannot be placed
    UNREACHABLE = "unreachable"  # no answer, a timeout or a 5xx
    FAILING = "failing"  # an answer that cannot be read


def state_after(error: AutocallError | None) -> ProviderState:
    """What one exchange with the provider says about it (a refused number is still an answer)."""
    if error is None or isinstance(error, ProviderRejectedRequest):
        return ProviderState.OK
    if isinstance(error, ProviderAuthFailed):
        return ProviderState.REFUSED
    if isinstance(error, ProviderUnavailable):
        return ProviderState.UNREACHABLE
    return ProviderState.FAILING


class ProviderProbe:
    """The provider's state as last seen; reading it never waits on the network.

    Every exchange the service has with the provider (calls, reports, tokens) updates the state.
    When there has been none for RECHECK_SECONDS, reading the state starts one check in the
    background, a new token: the cached one lasts months, so only a fresh request shows that the
    provider is still there and still takes the key.
    """

    def __init__(self, caller: AutocallClient, clock: Clock, recheck_seconds: float = RECHECK_SECONDS):
        self._caller = caller
        self._clock = clock
        self._recheck_seconds = recheck_seconds
        self._state = ProviderState.UNCHECKED
        self._seen = 0  # the caller's contact count last taken into account
        self._learned_at: datetime | None = None
        self._running: asyncio.Task[None] | None = None

    def state(self) -> ProviderState:
        """The latest state; starts a check when nothing has been heard for the recheck interval."""
        self._learn()
        now = self._clock.now()
        if self._learned_at is None or (now - self._learned_at).total_seconds() >= self._recheck_seconds:
            self.start_check()
        return self._state

    def start_check(self) -> None:
        """One check at a time; while one runs, asking again changes nothing."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check())

    async def stop(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running

    async def _check(self) -> None:
        # Failures are noted by the client itself (and logged there, naming host and operation).
        with contextlib.suppress(AutocallError):
            await self._caller.get_token(force_refresh=self._learned_at is not None)
        self._learn()

    def _learn(self) -> None:
        count, error = self._caller.last_contact
        if count == self._seen:
            return
        self._seen, self._learned_at = count, self._clock.now()
        state = state_after(error)
        if state != self._state:
            level = log.info if state == ProviderState.OK else log.error
            level("provider.state", state=str(state), previous=str(self._state), host=self._caller.host)
            self._state = state
