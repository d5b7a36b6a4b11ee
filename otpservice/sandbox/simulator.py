"""Simulated call lifecycles (ring, answer, talk, hang up) and the callbacks posted when calls end."""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType
from typing import Any

import httpx

from otpservice.sandbox.config import SandboxConfig
from otpservice.sandbox.numbers import ANSWERED, outcome_for
from otpservice.sandbox.state import Call, CallbackAttempt, format_time, vietnam_now

logger = logging.getLogger("otpservice.sandbox")

CALLBACK_TIMEOUT_SECONDS = 5.0


class CallSimulator:
    """Runs each accepted call as a task on the app's loop; an async context manager for the lifespan."""

    def __init__(self, config: SandboxConfig, tls: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._tls = tls
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[Call] = []  # callbacks held back by the reorder fault, oldest first
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> CallSimulator:
        self._http = httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS, verify=self._tls or True)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cancel_all()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def start(self, call: Call) -> None:
        """Let ``call`` ring, maybe be answered, end, and report back, in the background."""
        task = asyncio.create_task(self._run(call), name=f"sandbox-call-{call.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        """Stop every call still in progress and forget held callbacks."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._held.clear()

    async def flush(self) -> int:
        """Release the callbacks held by the reorder fault, newest first; return how many."""
        held, self._held = self._held[::-1], []
        for call in held:
            await self._send_copies(call)
        return len(held)

    async def send_callback(self, call: Call) -> CallbackAttempt:
        """Post the call's callback once, now, whatever the faults say."""
        assert call.callback_url is not None
        body, headers = self._callback_request(call)
        attempt = CallbackAttempt(call.callback_url, None, None, format_time(vietnam_now()) or "")
        if self._http is None:
            attempt.error = "sandbox is not running"
        else:
            try:
                response = await self._http.post(call.callback_url, json=body, headers=headers)
                attempt.status_code = response.status_code
            except httpx.HTTPError as error:
                attempt.error = f"{type(error).__name__}: {error}"
                # The URL may carry a per-call secret, so only the call id is logged.
                logger.warning("callback for %s failed: %s", call.call_id, type(error).__name__)
        call.callbacks.append(attempt)
        return attempt

    async def _run(self, call: Call) -> None:
        outcome = outcome_for(call.phone_number)
        await asyncio.sleep(self.config.ring_seconds)
        if outcome == ANSWERED:
            call.started_at = vietnam_now()
            if self.config.log_spoken_text:
                logger.info(
                    "sandbox call %s to %s says: %s", call.call_id, call.phone_number, call.spoken_text
                )
            await asyncio.sleep(self.config.talk_seconds)
        call.ended_at = vietnam_now()
        call.status = outcome
        if call.callback_url:
            await self._deliver_with_faults(call)

    async def _deliver_with_faults(self, call: Call) -> None:
        faults = self.config.callback_faults
        if faults.delay_seconds > 0:
            await asyncio.sleep(faults.delay_seconds)
        if faults.drop:
            stamp = format_time(vietnam_now()) or ""
            call.callbacks.append(CallbackAttempt(call.callback_url or "", None, "dropped by fault", stamp))
        elif faults.reorder:
            self._held.append(call)
        else:
            await self._send_copies(call)

    async def _send_copies(self, call: Call) -> None:
        for _ in range(1 + self.config.callback_faults.duplicate):
            await self.send_callback(call)

    def _callback_request(self, call: Call) -> tuple[dict[str, Any], dict[str, str]]:
        """The callback's JSON body and headers for the configured shape and api-key placement."""
        cdr = call.cdr()
        body: dict[str, Any]
        if self.config.callback_shape == "data":
            body = {"data": cdr}
        elif self.config.callback_shape == "legacy":
            body = {
                "call_id": cdr["id"],
                "campaign_id": cdr["campaign_id"],
                "user_id": cdr["user_id"],
                "duration": cdr["duration"],
                "keypress": cdr["keypress"],
                "phone_number": cdr["phone_number"],
                "start_time": cdr["started_at"] or cdr["created_at"],
                "status": "Success" if call.status == ANSWERED else "Fail",
            }
        else:
            body = cdr
        headers: dict[str, str] = {}
        key, placement = call.callback_apikey, self.config.callback_apikey_in
        if key:
            if placement == "authorization":
                headers["Authorization"] = key
            elif placement == "bearer":
                headers["Authorization"] = f"Bearer {key}"
            elif placement == "x-api-key":
                headers["X-API-Key"] = key
            elif placement == "apikey":
                headers["apikey"] = key
            elif placement == "body":
                body["callback_apikey"] = key
        return body, headers
