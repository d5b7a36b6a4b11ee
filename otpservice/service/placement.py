"""Placing one call that reads a code, and recording what came of it, truthfully.

A start or resend costs about its provider call, not the call plus an argon2 hash: the code's hash
(:class:`CodeHash`) is computed from the moment the code exists and stored, with one small script,
while the provider call is in flight. A call whose code may have been heard is recorded only after
its code is stored, so the code a user hears is checkable whatever happens next. After the provider
answers, exactly one of three facts is recorded:

* placed: the provider named the call; its code becomes the current one and the call is tracked;
* unplaced: the call surely never left (refused number, request never sent); its code is dropped
  (a write of it landing later is refused) and its budget given back;
* unknown: nobody can tell (a timeout after sending, an unreadable answer); its code stays accepted.

When storage fails while storing the code or recording, both are handed to the repair queue, in
that order, and the answer says what is known: a placed call is never reported as "nothing
happened". Should hashing itself fail (a bug), the send is recorded as failed, never left pending
with a code nobody can check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog

from otpservice.adapters.autocall import models as autocall
from otpservice.adapters.storage.budget import CallBudgets, Charges
from otpservice.adapters.storage.store import Placement, SendCode, VerificationStore
from otpservice.domain import errors
from otpservice.domain.callback_auth import CallbackSigner
from otpservice.domain.clock import Clock
from otpservice.domain.phone import PhoneNumber, mask_phone
from otpservice.domain.verification import DeliveryStatus, Verification
from otpservice.service import metrics
from otpservice.service.ports import VoiceCaller
from otpservice.service.repairs import RepairQueue
from otpservice.settings import Settings

log = structlog.get_logger(__name__)

# How long a client should wait before retrying when the provider is down.
PROVIDER_RETRY_AFTER_SECONDS = 5


def _seen(task: asyncio.Future[Any]) -> None:
    """Retrieve a finished task's failure, so none is ever reported as "never retrieved"; whoever
    needs its outcome awaits the task and sees it there."""
    if not task.cancelled():
        task.exception()


class CodeHash:
    """The hash of the code a call reads, computed and stored while the call is being placed.

    Hashing (argon2id, tens of milliseconds in the hashing pool) starts when the code exists; once
    the send that carries the code is stored, :meth:`store_with` writes the hash as soon as it is
    ready, concurrently with the provider call. Whoever needs the code stored awaits :meth:`stored`,
    or, while the write has not begun, takes it over (:meth:`take_write`) to store the hash with what
    it records next; a code not needed any more is :meth:`discard`-ed. Every task here has its
    outcome retrieved.
    """

    def __init__(self, hashing: asyncio.Future[str]):
        self._hashing = hashing
        self._hashing.add_done_callback(_seen)
        self._writing: asyncio.Task[None] | None = None
        self._write: Callable[[str], Awaitable[object]] | None = None
        self._write_begun = False
        self._taken: asyncio.Future[bool] | None = None
        self._written = False
        self.token = ""

    def store_with(self, write: Callable[[str], Awaitable[object]], token: str) -> None:
        """The send exists now, begun by the request ``token``: store the hash with ``write(hash)``
        once it is computed."""
        self._write, self.token = write, token
        self._writing = asyncio.get_running_loop().create_task(self._hash_then_write())
        self._writing.add_done_callback(_seen)

    async def _hash_then_write(self) -> None:
        assert self._write is not None
        # shielded: taken over or not, the hash goes on for whoever needs it
        encoded = await asyncio.shield(self._hashing)
        if self._taken is not None and await self._taken:
            return  # whoever took the write over stored it
        self._write_begun = True
        await self._write(encoded)
        self._written = True

    def take_write(self) -> bool:
        """Take the write over, unless it has begun: True when the caller now stores the hash
        itself (:meth:`hashed`), and then says with :meth:`settle_taken` whether it did."""
        if self._write_begun or self._taken is not None:
            return False
        self._taken = asyncio.get_running_loop().create_future()
        return True

    async def hashed(self) -> str:
        """The hash, once computed (shielded, like :meth:`stored`); raises what hashing raised."""
        return await asyncio.shield(self._hashing)

    def settle_taken(self, stored: bool) -> None:
        """Whether the caller that took the write over stored the hash. If not (it failed, or was
        cancelled), the write is made as if never taken: a code that may have been heard is kept."""
        if self._taken is None:
            return
        if stored:
            self._written = True
        if not self._taken.done():
            self._taken.set_result(stored)

    async def stored(self) -> None:
        """Wait until the hash is stored; raises StorageUnavailable, or what hashing raised.

        Shielded: a request cancelled while it waits leaves the write to finish on its own.
        """
        assert self._writing is not None, "store_with() first"
        await asyncio.shield(self._writing)

    async def write_again(self) -> None:
        """The write once more, after storage failed (the hash is known by then); for repairs."""
        if not self._written:
            assert self._write is not None
            await self._write(self._hashing.result())
            self._written = True

    async def discard(self) -> None:
        """The code will not be needed (nothing was begun, or its call surely never left): stop
        hashing and writing. A hashing failure is still worth a log line: it is a bug."""
        tasks = [task for task in (self._writing, self._hashing) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        if not self._hashing.cancelled() and self._hashing.exception() is not None:
            log.error("code.hash_failed", error=repr(self._hashing.exception()))


@dataclass(frozen=True, slots=True)
class VoiceRoute:
    """How a tenant's calls go out: its campaign and caller number (a client) and its template."""

    caller: VoiceCaller
    template: str


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One call of one verification: who to ring, which code, which of its calls this is.

    ``call_name`` names the call in every budget; ``charges`` are the budgets beyond the number's
    own that it was counted against (the number's own is given back by the store). ``code_hash``
    is the code's hash on its way to storage; None when it is stored already (a chosen code said
    again).
    """

    verification_id: str
    tenant: str
    phone: PhoneNumber
    code: str
    send_seq: int
    ttl_seconds: int
    call_name: str
    charges: Charges | None = None
    code_hash: CodeHash | None = None


class CallPlacer:
    """Places a verification's call and records its placement (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: VerificationStore,
        budgets: CallBudgets,
        routes: Mapping[str, VoiceRoute],
        default_route: VoiceRoute,
        clock: Clock,
        signer: CallbackSigner,
        repairs: RepairQueue,
    ):
        self._settings = settings
        self._provider_host = urlsplit(settings.autocall.url).netloc
        self._store = store
        self._budgets = budgets
        self._routes = routes
        self._default_route = default_route
        self._clock = clock
        self._signer = signer
        self._repairs = repairs

    def placement_deadline(self, now: datetime) -> datetime:
        """By when a placement starting now has surely resolved, if its process is still alive: its
        token and its call are each bounded by one exchange (see :meth:`place`)."""
        seconds = (
            2 * self._settings.autocall.exchange_bound_seconds + self._settings.storage_bound_seconds + 5
        )
        return now + timedelta(seconds=seconds)

    async def place(self, call: CallRequest) -> Verification:
        """Ring the number; answers the verification as recorded, or raises what the client must know."""
        vid, seq = call.verification_id, call.send_seq
        credential = self._signer.credential(vid, seq)
        callback_url = f"{self._settings.public_url}/callbacks/autocall/{vid}/{seq}/{credential}"
        route = self._routes.get(call.tenant, self._default_route)
        bound = self._settings.autocall.exchange_bound_seconds
        try:
            # The token first, on its own: while it is fetched no call can have left, so a failure
            # here (a timeout included) surely placed nothing.
            async with asyncio.timeout(bound):
                await route.caller.get_token()
        except (TimeoutError, autocall.AutocallError) as exc:
            why = f"no token within {bound:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise await self._failed(call, why, may_have_rung=False, refused=_refused(exc)) from exc
        flight = autocall.CallFlight()
        try:
            # the whole exchange (a refreshed token after a 401 included) within one bound, which the
            # placement deadline counts on: the client's timeouts bound each phase only
            async with asyncio.timeout(bound):
                placement = await route.caller.place_otp_call(
                    [call.phone.national],
                    code=call.code,
                    template_name=route.template,
                    callback_url=callback_url,
                    callback_apikey=credential,
                    flight=flight,
                )
        except TimeoutError as exc:
            # only a call request out without its answer may have rung (not a token after a 401)
            why = f"no answer within {bound:g} s"
            raise await self._failed(call, why, may_have_rung=flight.unanswered) from exc
        except autocall.AutocallError as exc:
            # Only an error that says so proves the call never left; unreadable answers may hide a call.
            may_have_rung = (
                isinstance(exc, autocall.ProviderUnavailable | autocall.ProviderMalformedResponse)
                and exc.request_may_have_reached_provider
            )
            raise await self._failed(call, type(exc).__name__, may_have_rung, refused=_refused(exc)) from exc
        rejection = placement.rejection_for(call.phone.national)
        if rejection is not None and placement.accepted:
            # one callee per request: an answer that both takes and refuses it cannot be trusted
            # to mean the call never left
            raise await self._failed(
                call, "the answer both accepted and refused the number", may_have_rung=True
            )
        if rejection is not None:
            self._log(call).warning(
                "call.rejected", reason=rejection.reason, host=self._provider_host, operation="otp_call"
            )
            metrics.CALLS.labels("rejected").inc()
            await self._unplaced(call, DeliveryStatus.REJECTED, rejection.reason, give_back_cooldown=False)
            raise errors.ProviderRejected(vid, rejection.reason)
        # Call ids are opaque: when the one callee's id does not end in its number, take the only id.
        call_id = placement.call_id_for(call.phone.national) or (
            placement.accepted[0] if len(placement.accepted) == 1 else None
        )
        if call_id is None:
            raise await self._failed(call, "no call id in the answer", may_have_rung=True)
        return await self._placed(call, call_id)

    async def _placed(self, call: CallRequest, call_id: str) -> Verification:
        now = self._clock.now()
        check_at = now + timedelta(seconds=self._settings.reconcile_after_seconds)
        code: SendCode | None = None

        def record() -> Awaitable[Placement]:
            return self._store.placed(
                call.verification_id,
                now,
                call.send_seq,
                call_id,
                ttl_seconds=call.ttl_seconds,
                check_outcome_at=check_at,
                code=code,
            )

        placement_recorded = False
        try:
            code = await self._code_stored(call, or_taken=True)
            recorded = await record()
            placement_recorded = True
        except errors.StorageUnavailable as exc:
            metrics.CALLS.labels("placed").inc()
            self._log(call).warning("call.placed", outcome="not_recorded_yet")
            self._repairs.submit(
                "record_placed_call", self._code_then(call, record), verification_id=call.verification_id
            )
            raise errors.StorageUnavailable(
                "the call was placed and its code will be accepted, but storage did not answer in time; "
                "GET the verification once storage is back",
                verification_id=call.verification_id,
                call_placed=True,
            ) from exc
        except errors.VerificationNotFound as exc:
            # The record existed when the send began: storage lost it since (a failover promoting a
            # replica that had not received it). The call is out, and nothing can check its code.
            metrics.CALLS.labels("placed").inc()
            metrics.RECORDS_LOST.labels("record_placed_call").inc()
            self._log(call).warning("call.placed", outcome="record_lost")
            raise errors.CodeLost(call.verification_id, record_lost=True) from exc
        finally:
            # Given back even when a repair will carry the code with the placement: both writes
            # are idempotent, whichever lands first stores it, and a code that may have been heard
            # does not wait on the repair queue alone.
            if call.code_hash is not None:
                call.code_hash.settle_taken(placement_recorded)
        metrics.CALLS.labels(recorded.outcome).inc()
        self._log(call).info("call.placed", outcome=recorded.outcome)
        return recorded.verification

    async def _failed(
        self, call: CallRequest, why: str, may_have_rung: bool, *, refused: bool = False
    ) -> errors.ProviderUnavailable:
        """Record a placement that failed or cannot be tracked, and say so as provider_unavailable."""
        self._log(call).warning(
            "call.placement_failed",
            error=why,
            may_have_rung=may_have_rung,
            host=self._provider_host,
            operation="otp_call",
        )
        if may_have_rung:
            metrics.CALLS.labels("unknown").inc()
            now = self._clock.now()
            reason = f"the provider did not say whether it placed the call: {why}"
            await self._after_code(
                "record_unknown_placement",
                call,
                lambda: self._store.placement_unknown(call.verification_id, now, call.send_seq, reason),
            )
            detail = (
                "the voice provider did not confirm the call; it may still ring, and its code is accepted "
                "until the verification expires"
            )
        else:
            metrics.CALLS.labels("unavailable").inc()
            await self._unplaced(
                call, DeliveryStatus.FAILED, f"provider unavailable: {why}", give_back_cooldown=True
            )
            why = "refused the request" if refused else "could not be reached"
            if call.send_seq > 1:  # a resend (also one a start made on the number's pending verification)
                detail = (
                    f"the voice provider {why}; no new call was placed; unless it expired meanwhile, the "
                    "verification stays pending and the code of its earlier call still works; try again "
                    "shortly"
                )
            else:
                detail = f"the voice provider {why}; no call was placed; try again shortly"
        return errors.ProviderUnavailable(
            detail, PROVIDER_RETRY_AFTER_SECONDS, call.verification_id, call_may_have_rung=may_have_rung
        )

    async def _unplaced(
        self,
        call: CallRequest,
        delivery: DeliveryStatus,
        reason: str,
        *,
        give_back_cooldown: bool,
    ) -> None:
        """The call surely never left: drop its code, and give its budget back."""
        if call.code_hash is not None:
            await call.code_hash.discard()  # not needed; a write of it landing late is refused
        await self._record_unplaced(
            "record_unplaced_call",
            call,
            delivery,
            reason,
            give_back_cooldown=give_back_cooldown,
            # a resend that never reached the provider leaves the last call's delivery in view
            describe=delivery is DeliveryStatus.REJECTED,
        )
        if call.charges is not None:
            await self.give_back(call.charges, call.verification_id)

    async def _record_unplaced(
        self,
        what: str,
        call: CallRequest,
        delivery: DeliveryStatus,
        reason: str,
        *,
        give_back_cooldown: bool,
        describe: bool,
        keep_call_counted: bool = False,
    ) -> None:
        """Store that the call's send never took place (its code dropped; see ``unplaced.lua``)."""
        now = self._clock.now()
        await self._write(
            what,
            call,
            lambda: self._store.unplaced(
                call.verification_id,
                now,
                call.send_seq,
                call.call_name,
                delivery=delivery,
                reason=reason,
                give_back_cooldown=give_back_cooldown,
                describe=describe,
                keep_call_counted=keep_call_counted,
            ),
        )

    async def give_back(self, charges: Charges, verification_id: str, *, now: bool = True) -> None:
        """Return a call's counts to its budgets; ``now=False`` when storage just failed."""
        if not charges.budgets:
            return
        await self._repairs.write(
            "give_back_budget",
            lambda: self._budgets.give_back(charges),
            now=now,
            verification_id=verification_id,
        )

    async def _write(self, what: str, call: CallRequest, write: Callable[[], Awaitable[object]]) -> None:
        """One recording write now, or in the background when storage fails (the answer stands)."""
        await self._repairs.write(what, write, verification_id=call.verification_id)

    async def _code_stored(self, call: CallRequest, *, or_taken: bool = False) -> SendCode | None:
        """Wait until the code this call reads is stored: it may have been heard.

        With ``or_taken``, a write not begun yet (the hash is still being computed) is taken over
        instead: the code is answered, for the caller to store with what it records next (one round
        trip instead of two, when the provider answered before the hash was ready).

        Raises StorageUnavailable when storing it failed. Should hashing have failed (a bug, or
        memory running out), the code can never be checked: the send is recorded as failed (a first
        call fails its verification; a resend gives way to the current code) with its call still
        counted, as it may ring, and CodeLost tells the client so, with the id.
        """
        code_hash = call.code_hash
        if code_hash is None:
            return None
        try:
            if or_taken and code_hash.take_write():
                return SendCode(code_hash.token, await code_hash.hashed())
            await code_hash.stored()
            return None
        except errors.StorageUnavailable:
            raise
        except Exception as exc:
            self._log(call).exception("call.code_lost")
            await self._record_unplaced(
                "record_code_lost",
                call,
                DeliveryStatus.FAILED,
                "the code could not be prepared",
                give_back_cooldown=False,
                describe=True,
                keep_call_counted=True,
            )
            raise errors.CodeLost(call.verification_id) from exc

    def _code_then(
        self, call: CallRequest, record: Callable[[], Awaitable[object]]
    ) -> Callable[[], Awaitable[object]]:
        """``record``, preceded by the write of the call's code (a repair: the placed and unknown
        scripts must find the code, and both writes are idempotent)."""
        code_hash = call.code_hash
        if code_hash is None:
            return record

        async def code_then_record() -> object:
            await code_hash.write_again()
            return await record()

        return code_then_record

    async def _after_code(
        self, what: str, call: CallRequest, record: Callable[[], Awaitable[object]]
    ) -> None:
        """``record`` once the call's code is stored; when storage fails, both go to the repair queue."""
        try:
            await self._code_stored(call)
        except errors.StorageUnavailable:
            self._repairs.submit(what, self._code_then(call, record), verification_id=call.verification_id)
            return
        await self._write(what, call, record)

    @staticmethod
    def _log(call: CallRequest) -> structlog.typing.FilteringBoundLogger:
        return log.bind(  # type: ignore[no-any-return]
            verification_id=call.verification_id, send=call.send_seq, phone=mask_phone(call.phone.e164)
        )


def _refused(exc: BaseException) -> bool:
    """Whether the provider answered, refusing the request (a 4xx, a refused key): it was reached."""
    return isinstance(exc, autocall.ProviderRejectedRequest | autocall.ProviderAuthFailed)
