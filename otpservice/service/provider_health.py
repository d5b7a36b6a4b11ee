"""Whether the voice provider takes our secret key: checked at start, then kept fresh for /readyz."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from enum import StrEnum

import structlog

from otpservice.adapters.autocall.client import AutocallClient
from otpservice.adapters.autocall.models import AutocallError, ProviderAuthFailed, ProviderUnavailable

log = structlog.get_logger(__name__)


class ProviderState(StrEnum):
    OK = "ok"
    UNCHECKED = "unchecked"  # the first check has not finished
    REFUSED = "refused"  # the provider refuses the secret key: calls cannot be placed
    UNREACHABLE = "unreachable"  # no answer, a timeout or a 5xx
    FAILING = "failing"  # an answer that cannot be read


class ProviderProbe:
    """The provider's state as last seen; a probe never waits on the network.

    A check asks for a token, which the client caches while it is fresh, so checking a healthy
    provider costs nothing; a stale result starts one check in the background and is answered
    meanwhile (a readiness probe has about a second, a provider timeout is longer).
    """

    def __init__(
        self,
        caller: AutocallClient,
        host: str,
        *,
        recheck_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._caller = caller
        self._host = host
        self._recheck_seconds = recheck_seconds
        self._monotonic = monotonic
        self._state = ProviderState.UNCHECKED
        self._checked_at = float("-inf")
        self._running: asyncio.Task[ProviderState] | None = None

    def state(self) -> ProviderState:
        """The last state seen; starts a check when it is older than the recheck interval."""
        if self._monotonic() - self._checked_at >= self._recheck_seconds:
            self.start_check()
        return self._state

    def start_check(self) -> asyncio.Task[ProviderState]:
        """One check at a time; a second caller gets the running one."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check())
        return self._running

    async def stop(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running

    async def _check(self) -> ProviderState:
        try:
            await self._caller.get_token()
            state = ProviderState.OK
        except ProviderAuthFailed:
            state = ProviderState.REFUSED
        except ProviderUnavailable:
            state = ProviderState.UNREACHABLE
        except AutocallError:
            state = ProviderState.FAILING
        if state != self._state:
            # The client has logged the failure itself (host, operation, status); this says what it means.
            level = log.info if state == ProviderState.OK else log.error
            level("provider.state", state=str(state), previous=str(self._state), host=self._host)
        self._state, self._checked_at = state, self._monotonic()
        return state
