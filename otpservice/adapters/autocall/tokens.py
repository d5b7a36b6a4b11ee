"""One access token per client: fetched lazily, reused, refreshed ahead of its end in the background,
fetched once however many wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from otpservice.adapters.autocall.models import AccessToken, AutocallError

log = structlog.get_logger(__name__)


def _retrieved(task: asyncio.Task[AccessToken]) -> None:
    """A background refresh's outcome: a provider failure was logged where it happened; anything
    else is a bug, logged here rather than lost."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, AutocallError):
        log.error("autocall.token.refresh_crashed", error=repr(error))


class TokenCache:
    """Single-flight token holder on an injected monotonic clock.

    A token is trusted until ``refresh_margin_seconds`` before its lifetime runs out; the margin is
    capped at half the lifetime so a short-lived token is still reused rather than fetched per call.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[AccessToken]],
        *,
        monotonic: Callable[[], float],
        refresh_margin_seconds: float,
    ):
        self._fetch = fetch
        self._monotonic = monotonic
        self._refresh_margin_seconds = refresh_margin_seconds
        self._lock = asyncio.Lock()
        self._token: AccessToken | None = None
        self._refreshing: asyncio.Task[AccessToken] | None = None

    @property
    def current(self) -> AccessToken | None:
        """The cached token, fresh or not (for redaction; callers use :meth:`get`)."""
        return self._token

    async def get(self, *, force_refresh: bool = False) -> AccessToken:
        """A token the provider takes now; ``force_refresh`` fetches a new one unless another task
        just did.

        Inside its refresh margin a token is still alive: it is answered at once while its
        successor is fetched in the background, so no call waits on the token endpoint (or fails
        while it is slow or down) before the held token has run out.
        """
        seen = self._token
        if seen is not None and not force_refresh:
            if self._is_fresh(seen):
                return seen
            if self._monotonic() < seen.obtained_at + seen.lifetime_seconds:
                self._refresh_ahead(seen)
                return seen
        return await self._replace(seen)

    def _refresh_ahead(self, seen: AccessToken) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            return  # one refresh at a time; the held token serves meanwhile
        self._refreshing = asyncio.get_running_loop().create_task(self._replace(seen))
        # a failure is logged where the token was asked for; the next call in the margin tries again
        self._refreshing.add_done_callback(_retrieved)

    async def close(self) -> None:
        """Stop a refresh under way (before its HTTP client closes under it)."""
        refreshing = self._refreshing
        if refreshing is not None and not refreshing.done():
            refreshing.cancel()
            await asyncio.wait([refreshing])

    async def replace(self, rejected: AccessToken) -> AccessToken:
        """A token other than ``rejected`` (the provider answered 401 to it)."""
        return await self._replace(rejected, rejected=True)

    async def _replace(self, seen: AccessToken | None, *, rejected: bool = False) -> AccessToken:
        async with self._lock:
            # Another task fetched while this one waited for the lock: its token is as good as a new one.
            if self._token is not None and self._token is not seen and self._is_fresh(self._token):
                return self._token
            if rejected:
                self._token = None
            # Otherwise the token held stays until a new one comes: a refresh that fails (the token
            # endpoint down for a moment, a readiness check forcing one) must not throw away a token
            # the provider still takes.
            self._token = await self._fetch()
            return self._token

    def _is_fresh(self, token: AccessToken) -> bool:
        margin = min(self._refresh_margin_seconds, token.lifetime_seconds / 2)
        return self._monotonic() < token.obtained_at + token.lifetime_seconds - margin
