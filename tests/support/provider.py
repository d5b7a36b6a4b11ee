"""Provider faults the sandbox cannot produce, injected at the provider boundary (a transport)."""

from __future__ import annotations

import asyncio
import json
import threading
from urllib.parse import urlsplit

import httpx

from tests.support.sandbox import TLS_CONTEXT


class SlowAnswers(httpx.AsyncBaseTransport):
    """The real sandbox over HTTP, but each call-placing answer arrives ``delay`` seconds after the call.

    The call is placed (the phone "rings") at once; only its answer, with the call id, is late: the
    window in which a test can stall storage between placing a call and recording it.
    """

    def __init__(self, delay: float):
        self._inner = httpx.AsyncHTTPTransport(verify=TLS_CONTEXT)
        self.delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path.endswith("/otp") and self.delay:
            await response.aread()
            await asyncio.sleep(self.delay)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordedRequests(httpx.AsyncBaseTransport):
    """The real sandbox over HTTP, keeping the path and JSON body of every call the service placed."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport(verify=TLS_CONTEXT)
        self.placed: list[tuple[str, dict[str, object]]] = []
        self.answered = 0  # calls whose answer reached the service

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/otp"):
            return await self._inner.handle_async_request(request)
        self.placed.append((request.url.path, json.loads(await request.aread())))
        response = await self._inner.handle_async_request(request)
        # Read whole here, so that once ``answered`` counts it the service handles the answer
        # without waiting for anything more (a test can tell it reached the service's code).
        await response.aread()
        self.answered += 1
        return response

    def called_id(self, n: int = -1) -> str:
        """The verification id of the ``n``th call placed (from its callback URL)."""
        callback = self.placed[n][1]["callback_url"]
        assert isinstance(callback, str)
        return urlsplit(callback).path.split("/")[3]

    async def aclose(self) -> None:
        await self._inner.aclose()


class HeldAnswers(RecordedRequests):
    """Recorded calls whose answers reach the service only once ``release`` is set (from any thread):
    the call is placed at once, and a test acts while the service waits to learn it was."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path.endswith("/otp"):
            await asyncio.to_thread(self.release.wait, 10)
        return response
