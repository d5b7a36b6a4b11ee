"""The verification use cases: start, resend, cancel, verify and read.

Thin HTTP handlers call these; every rule lives in the domain, every atomic move in the store, the
placing of calls in :mod:`placement` and what the provider reports back in :mod:`delivery`.

Under storage faults every answer says what is known (see the README, "When storage fails"): a
request either changed nothing, or says what it did and gives the id to follow up.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog

from otpservice.adapters.storage.budget import Budget, CallBudgets, Charges, Refusal
from otpservice.adapters.storage.store import (
    NewVerification,
    Reservation,
    Started,
    VerificationStore,
    call_name,
)
from otpservice.domain import errors
from otpservice.domain.client_ip import client_subject
from otpservice.domain.clock import Clock, to_millis
from otpservice.domain.codes import RandomBelow, generate_code
from otpservice.domain.limits import Limit
from otpservice.domain.phone import PhoneNumber, mask_phone, number_range, parse_phone, stored_phone
from otpservice.domain.verification import Verification, VerificationStatus
from otpservice.service import metrics
from otpservice.service.hashing import HashingPool
from otpservice.service.placement import CallPlacer, CallRequest, CodeHash
from otpservice.service.repairs import RepairQueue
from otpservice.settings import Settings
from otpservice.tenants import Tenant

log = structlog.get_logger(__name__)

# How long a reserved attempt may stay unjudged before it counts as abandoned and comes back.
ATTEMPT_LEASE_SECONDS = 15


def new_verification_id() -> str:
    # 128 random bits in 22 URL-safe characters (hex took 32): every key, log line and event carries it
    return "vf_" + secrets.token_urlsafe(16)


def new_request_token() -> str:
    """Names one request's writes, so that a retried write is recognised and applied once."""
    return secrets.token_hex(8)


def _resend_not_placed(verification_id: str) -> errors.StorageUnavailable:
    """Storage failed before a resend's call was placed: nothing rang, the current code stands."""
    return errors.StorageUnavailable(
        "storage did not answer, so no call was placed; the current code still works",
        verification_id=verification_id,
        call_placed=False,
    )


_REFUSALS: dict[str, Callable[[int], errors.BudgetSpent]] = {
    "client": errors.ClientRateLimited,
    "prefix": errors.PrefixRateLimited,
    "tenant_day": errors.TenantCallCapReached,
    "global": errors.CallBudgetExhausted,
}


class _PendingEnded(Exception):
    """The pending verification a start answers with ended before the start was done with it."""

    def __init__(self, ended: errors.NotPending):
        super().__init__(str(ended))
        self.ended = ended


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The answer to one submitted code."""

    valid: bool
    verification: Verification


@dataclass(frozen=True, slots=True)
class StartResult:
    """A start's answer: the verification, and whether this request ``created`` it (else it was the
    tenant's pending verification of the number, answered instead of a second one)."""

    created: bool
    verification: Verification


class VerificationService:
    """The use cases, over injected seams: stores, call placer, hashing, clock and randomness."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: VerificationStore,
        budgets: CallBudgets,
        placer: CallPlacer,
        hashing: HashingPool,
        clock: Clock,
        repairs: RepairQueue,
        randbelow: RandomBelow = secrets.randbelow,
        new_id: Callable[[], str] = new_verification_id,
        new_token: Callable[[], str] = new_request_token,
    ):
        self._settings = settings
        self._store = store
        self._budgets = budgets
        self._placer = placer
        self._hashing = hashing
        self._clock = clock
        self._repairs = repairs
        self._randbelow = randbelow
        self._new_id = new_id
        self._new_token = new_token

    async def start(
        self,
        tenant: Tenant,
        raw_phone: str,
        *,
        code_length: int | None = None,
        ttl_seconds: int | None = None,
        metadata: dict[str, Any] | None = None,
        client_ip: str | None = None,
        code: str | None = None,
    ) -> StartResult:
        """Create a verification and place its first call, unless the tenant has one pending for the
        number: then answer that one (calling again, as a resend would, once its cooldown passed).

        The budgets beyond the number's own are taken first, so a verification is only ever created
        (and seen by a parallel start) once every budget allowed its call. On one server (or
        Sentinel's master) the create script takes them itself, before the number's lock, budget
        and pending verification and the insert: one round trip. In a Cluster each budget lives in
        a slot of its own (one script may touch one slot), so there they are a step of their own
        before the create, one script per slot, in parallel. The code is hashed from then on, while
        its call is placed (see :mod:`placement`): a start costs about its provider call, not the
        call plus a hash. Hashing starts only once the budgets allowed the call, so a refused start
        costs no hash.
        """
        if code is not None:
            code = self._chosen_code(tenant, code, code_length)
        client = client_subject(client_ip) if client_ip is not None else None
        phone = parse_phone(raw_phone, self._settings.allowed_countries)
        length = len(code) if code else code_length or tenant.code_length or self._settings.code_length
        ttl = ttl_seconds or tenant.ttl_seconds or self._settings.ttl_seconds
        try:
            return await self._create_or_answer(tenant, phone, length, ttl, metadata, client, code)
        except _PendingEnded:
            # The number's pending verification ended (a cancel, an approval, its expiry) between
            # the create that found it and its call again: the number is free, so this start
            # creates what it asked for. Once: a second such race answers what ended it.
            try:
                return await self._create_or_answer(tenant, phone, length, ttl, metadata, client, code)
            except _PendingEnded as again:
                raise again.ended from None

    async def _create_or_answer(
        self,
        tenant: Tenant,
        phone: PhoneNumber,
        length: int,
        ttl: int,
        metadata: dict[str, Any] | None,
        client: str | None,
        code: str | None,
    ) -> StartResult:
        """Create the verification and place its call, or answer the number's pending one."""
        verification_id = self._store.new_id(phone.e164, self._new_id)
        now = self._clock.now()
        new = NewVerification(
            id=verification_id,
            tenant=tenant.name,
            call=call_name(verification_id, self._new_token()),
            phone=phone.e164,
            code_length=length,
            ttl_seconds=ttl,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            resend_available_at=now + timedelta(seconds=self._settings.resend_cooldown_seconds),
            max_attempts=tenant.max_attempts or self._settings.max_attempts,
            metadata=metadata or {},
            custom_code=code is not None,
            webhook=tenant.webhook_url is not None,
        )
        budgets = self._budgets_for(tenant, phone, client, now)
        spoken = code or generate_code(length, self._randbelow)
        in_script = self._store.takes_budgets_in_create
        if in_script:  # one round trip: the budgets, the number's checks and the insert
            charges = Charges(new.call, to_millis(now), tuple(budgets))
            started = await self._create(new, phone, charges, now, budgets)
            code_hash = CodeHash(self._hashing.hash(verification_id, spoken))
        else:
            charges = await self._charge(verification_id, new.call, budgets, now, phone)
            code_hash = CodeHash(self._hashing.hash(verification_id, spoken))
            try:
                started = await self._create(new, phone, charges, now)
            except BaseException:
                await code_hash.discard()  # nothing was begun that could take it
                raise
        if started.outcome == "existing":
            await code_hash.discard()
            if not in_script:  # the script gave its counts back itself
                await self._placer.give_back(charges, verification_id)
            try:
                return await self._answer_pending(tenant, started.verification, code, client)
            except errors.NotPending as ended:
                raise _PendingEnded(ended) from None
        code_hash.store_with(
            lambda encoded: self._store.store_code(
                verification_id, self._clock.now(), 1, "", encoded, tenant=tenant.name
            ),
            token="",
        )
        log.info(
            "verification.created",
            verification_id=verification_id,
            tenant=tenant.name,
            phone=mask_phone(phone.e164),
        )
        metrics.VERIFICATIONS_STARTED.labels(tenant.name).inc()
        placed = await self._placer.place(
            CallRequest(verification_id, tenant.name, phone, spoken, 1, ttl, new.call, charges, code_hash)
        )
        return StartResult(created=True, verification=placed.as_of(self._clock.now()))

    async def _create(
        self,
        new: NewVerification,
        phone: PhoneNumber,
        charges: Charges,
        now: datetime,
        budgets: list[Budget] | None = None,
    ) -> Started:
        """Store the verification without its code's hash (that follows while its call is placed).

        The number's budget, its failure lock and its pending verification are checked in the same
        script, and so are ``budgets`` when given (one server: see the store); on a refusal the
        other budgets' counts go back.
        """
        try:
            started = await self._store.create(new, None, self._placer.placement_deadline(now), budgets or ())
        except errors.StorageUnavailable as exc:
            self._void_later(new, "not placed: storage unavailable")
            await self._placer.give_back(charges, new.id, now=False)
            raise errors.StorageUnavailable(
                "storage did not answer, so no call was placed; start again (this id, if it ever "
                "appears, is failed)",
                verification_id=new.id,
                call_placed=False,
            ) from exc
        except errors.VerificationError as exc:
            if budgets is None:  # taken before, by CallBudgets; a script taking them gave them back
                await self._placer.give_back(charges, new.id)
            if isinstance(exc, errors.PhoneRateLimited):
                self._log_refusal("phone", phone)
            raise
        if isinstance(started, Refusal):
            raise self._refused(started, phone)
        return started

    async def _charge(
        self, verification_id: str, call: str, budgets: list[Budget], now: datetime, phone: PhoneNumber
    ) -> Charges:
        """Take the call from every budget beyond the number's own, or refuse before anything changed."""
        try:
            charged = await self._budgets.take(call, budgets, to_millis(now))
        except errors.StorageUnavailable as exc:
            # a count may still land: give every budget back in the background
            await self._placer.give_back(
                Charges(call, to_millis(now), tuple(budgets)), verification_id, now=False
            )
            raise errors.StorageUnavailable(
                "storage did not answer, so nothing was stored and no call was placed; try again",
                call_placed=False,
            ) from exc
        if isinstance(charged, Refusal):
            raise self._refused(charged, phone)
        return charged

    def _refused(self, refusal: Refusal, phone: PhoneNumber) -> errors.BudgetSpent:
        """The error a budget's refusal answers, with its Retry-After; logged and counted."""
        self._log_refusal(refusal.budget.kind, phone)
        return _REFUSALS[refusal.budget.kind](max(1, -(-refusal.wait_ms // 1000)))

    def _chosen_code(self, tenant: Tenant, code: str, code_length: int | None) -> str:
        """A code the tenant chose (the one its SMS carried): allowed tenants only, 4-10 digits."""
        if not tenant.allow_custom_code:
            raise errors.CustomCodeNotAllowed()
        if not (code.isascii() and code.isdigit() and 4 <= len(code) <= 10):
            raise errors.InvalidCodeFormat("a chosen code must be 4 to 10 digits")
        if code_length is not None and code_length != len(code):
            raise errors.InvalidCodeFormat("code_length must match the chosen code's length, or be left out")
        return code

    async def _answer_pending(
        self, tenant: Tenant, pending: Verification, code: str | None, client: str | None
    ) -> StartResult:
        """The tenant's pending verification of the number, called again if its cooldown passed."""
        if code is not None or pending.custom_code:
            # the user may hold either code: a start must not switch it
            await self._check_chosen_code(tenant, pending, code)
        now = self._clock.now()
        if now >= pending.resend_available_at:
            try:
                return StartResult(False, await self._resend(tenant, pending, code, client))
            except errors.ResendTooSoon:
                pass  # another start got there first
            except errors.SendLimitReached:
                raise errors.SendLimitReached(
                    f"this number's pending verification {pending.id} has used its calls; cancel it "
                    "(DELETE /otp/{id}) or let it expire before starting again"
                ) from None
        log.info("verification.start_answered_pending", verification_id=pending.id, tenant=tenant.name)
        return StartResult(created=False, verification=pending.as_of(now))

    async def _check_chosen_code(self, tenant: Tenant, verification: Verification, code: str | None) -> None:
        """A chosen code given again must be the verification's. A wrong one is judged like a wrong
        code at /verify (it spends an attempt and counts towards the lock), else guessing were free."""
        if not verification.custom_code:
            raise errors.CustomCodeMismatch(
                "this number has a pending verification with a generated code; cancel it to choose one"
            )
        if code is None:
            raise errors.CustomCodeMismatch(
                'this verification\'s code was chosen by the client: send it again as "code"'
            )
        token = self._new_token()
        now = self._clock.now()
        lease_until = now + timedelta(seconds=ATTEMPT_LEASE_SECONDS)
        try:
            reservation = await self._store.reserve(
                verification.id, token, now, len(code), lease_until, tenant=tenant.name
            )
        except errors.StorageUnavailable as exc:
            self._release(verification.id, tenant.name, token, now)
            raise errors.StorageUnavailable(
                "storage did not answer; the code was not checked, no attempt was spent and no call "
                "was placed; try again",
                verification_id=verification.id,
                call_placed=False,
            ) from exc
        if await self._matched_send(verification.id, code, reservation) is not None:
            # A right code spends nothing. Given back before the resend begins: until then it counts
            # as an attempt in flight, and with one attempt left the resend would be refused for it.
            try:
                await self._store.release(verification.id, token, now, tenant=tenant.name)
            except errors.StorageUnavailable:
                self._release(verification.id, tenant.name, token, now)
            return
        try:
            judgement = await self._store.judge(
                verification.id, token, self._clock.now(), None, tenant=tenant.name
            )
        except errors.StorageUnavailable as exc:
            self._release(verification.id, tenant.name, token, now)
            raise errors.StorageUnavailable(
                "storage did not answer while a wrong code was recorded, and no call was placed; GET "
                "the verification to see whether an attempt was spent",
                verification_id=verification.id,
                call_placed=False,
            ) from exc
        raise errors.CustomCodeMismatch(
            "this is not the verification's code (it counts as a wrong code: "
            f"{judgement.verification.attempts_remaining} attempts remain)"
        )

    async def _matched_send(self, verification_id: str, code: str, reservation: Reservation) -> int | None:
        """Which accepted code ``code`` is (its send), checked off the event loop; None if none."""
        for accepted in reservation.codes:
            if await self._hashing.matches(verification_id, code, accepted.encoded_hash):
                return accepted.send_seq
        return None

    def _void_later(self, new: NewVerification, reason: str) -> None:
        """The create may still land later: make sure it can only land as failed, never pending."""
        self._repairs.submit(
            "void_create",
            lambda: self._store.void_create(new, reason, self._clock.now()),
            verification_id=new.id,
        )

    def _budgets_for(
        self, tenant: Tenant, phone: PhoneNumber, client: str | None, now: datetime
    ) -> list[Budget]:
        """The budgets a call is charged to besides the number's own, as configured."""
        settings = self._settings
        budgets = []
        if client is not None and settings.client_ip_limits:
            budgets.append(Budget("client", f"c:{tenant.name}:{client}", settings.client_ip_limits))
        if settings.prefix_limits:
            budgets.append(Budget("prefix", f"r:{number_range(phone.e164)}", settings.prefix_limits))
        cap = tenant.daily_call_cap or settings.daily_call_cap
        if cap:
            day = now.astimezone(UTC).date()
            midnight = datetime.combine(day + timedelta(days=1), time(), UTC)
            budgets.append(
                Budget(
                    "tenant_day",
                    f"t:{tenant.name}:{day:%Y%m%d}",
                    (Limit(cap, 86_400_000),),
                    resets_at_ms=to_millis(midnight),
                )
            )
        if settings.global_calls_per_minute:
            budgets.append(Budget("global", "all", (Limit(settings.global_calls_per_minute, 60_000),)))
        return budgets

    def _log_refusal(self, kind: str, phone: PhoneNumber) -> None:
        metrics.BUDGET_REFUSALS.labels(kind).inc()
        if kind == "global":
            log.warning(
                "call.budget_exhausted", budget="global", limit=self._settings.global_calls_per_minute
            )
        else:
            log.warning("call.refused", budget=kind, phone=mask_phone(phone.e164))

    async def resend(self, tenant: Tenant, verification_id: str, code: str | None = None) -> Verification:
        """Call again with a new code (or the chosen one again); the old code works until the new
        call is known to be placed."""
        current = await self.get(tenant, verification_id)
        if current.status is not VerificationStatus.PENDING:
            raise errors.NotPending(current.status)
        if code is not None:
            code = self._chosen_code(tenant, code, None)  # not digits: refused before any attempt
        if code is not None or current.custom_code:
            await self._check_chosen_code(tenant, current, code)
        return await self._resend(tenant, current, code)

    async def _resend(
        self, tenant: Tenant, current: Verification, code: str | None, client: str | None = None
    ) -> Verification:
        """Take the budgets, begin the send atomically (cooldown, lock, the number's budget), call.

        As for a start, a new code is hashed while the send is begun and its call placed; the read
        that decided to resend came before any write, and the answer is the view the placement's
        script left, not a read after it.
        """
        verification_id = current.id
        phone = stored_phone(current.phone)
        token = self._new_token()
        name = call_name(verification_id, token)
        now = self._clock.now()
        budgets = self._budgets_for(tenant, phone, client, now)
        same_code = current.custom_code and code is not None  # its hash is stored already
        spoken = (
            code if same_code and code is not None else generate_code(current.code_length, self._randbelow)
        )
        code_hash: CodeHash | None = None
        if self._store.takes_budgets_in_create:  # one round trip: budgets and begin (see start)
            charges = Charges(name, to_millis(now), tuple(budgets))
            send_seq = await self._begin_send(tenant, current, token, charges, now, same_code, budgets)
            if not same_code:
                code_hash = CodeHash(self._hashing.hash(verification_id, spoken))
        else:
            charges = await self._charge(verification_id, name, budgets, now, phone)
            if not same_code:
                code_hash = CodeHash(self._hashing.hash(verification_id, spoken))
            try:
                send_seq = await self._begin_send(tenant, current, token, charges, now, same_code)
            except BaseException:
                if code_hash is not None:
                    await code_hash.discard()  # nothing was begun that could take it
                raise
        if code_hash is not None:
            code_hash.store_with(
                lambda encoded: self._store.store_code(
                    verification_id, self._clock.now(), send_seq, token, encoded, tenant=tenant.name
                ),
                token=token,
            )
        placed = await self._placer.place(
            CallRequest(
                verification_id,
                tenant.name,
                phone,
                spoken,
                send_seq,
                current.ttl_seconds,
                name,
                charges,
                code_hash,
            )
        )
        return placed.as_of(self._clock.now())

    async def _begin_send(
        self,
        tenant: Tenant,
        current: Verification,
        token: str,
        charges: Charges,
        now: datetime,
        same_code: bool,
        budgets: list[Budget] | None = None,
    ) -> int:
        """Begin the next send (its code's hash follows, unless it is the current code again); on a
        refusal the other budgets' counts go back. ``budgets``: taken by the same script (one
        server), else they were taken before (``charges``)."""
        try:
            begun = await self._store.begin_send(
                current.id,
                now,
                tenant=tenant.name,
                token=token,
                cooldown_seconds=self._settings.resend_cooldown_seconds,
                max_sends=self._settings.max_sends,
                same_code=same_code,
                ttl_seconds=current.ttl_seconds,
                placement_deadline=self._placer.placement_deadline(now),
                budgets=budgets or (),
                phone=current.phone,
            )
        except errors.StorageUnavailable as exc:
            self._release(current.id, tenant.name, token, now)  # the begin may land later
            await self._placer.give_back(charges, current.id, now=False)
            raise _resend_not_placed(current.id) from exc
        except errors.VerificationError as exc:
            if budgets is None:  # taken before, by CallBudgets; a script taking them gave them back
                await self._placer.give_back(charges, current.id)
            if isinstance(exc, errors.PhoneRateLimited):
                self._log_refusal("phone", stored_phone(current.phone))
            raise
        if isinstance(begun, Refusal):
            raise self._refused(begun, stored_phone(current.phone))
        return begun

    async def cancel(self, tenant: Tenant, verification_id: str) -> Verification:
        now = self._clock.now()
        try:
            canceled = await self._store.cancel(verification_id, self._new_token(), now, tenant=tenant.name)
        except errors.StorageUnavailable as exc:
            raise errors.StorageUnavailable(
                "storage did not answer; the cancel may still be applied: GET the verification",
                verification_id=verification_id,
            ) from exc
        log.info("verification.canceled", verification_id=verification_id, tenant=tenant.name)
        return canceled.as_of(now)

    async def verify(self, tenant: Tenant, verification_id: str, code: str) -> VerifyResult:
        """Check a code: the attempt is reserved atomically first, then the hash is compared."""
        if not code.isascii() or not code.isdigit():
            raise errors.InvalidCodeFormat("the code must be digits only")
        token = self._new_token()
        now = self._clock.now()
        lease_until = now + timedelta(seconds=ATTEMPT_LEASE_SECONDS)
        # Admitted before the attempt is reserved: a check refused for load spends nothing.
        with self._hashing.admission():
            try:
                reservation = await self._store.reserve(
                    verification_id, token, now, len(code), lease_until, tenant=tenant.name
                )
            except errors.StorageUnavailable as exc:
                self._release(verification_id, tenant.name, token, now)
                raise errors.StorageUnavailable(
                    "storage did not answer; the code was not checked and no attempt was spent; "
                    "submit it again",
                    verification_id=verification_id,
                ) from exc
            matched = await self._matched_send(verification_id, code, reservation)
        try:
            judgement = await self._store.judge(
                verification_id, token, self._clock.now(), matched, tenant=tenant.name
            )
        except errors.StorageUnavailable as exc:
            self._release(verification_id, tenant.name, token, now)
            raise errors.StorageUnavailable(
                "storage did not answer while the result was recorded; GET the verification once storage "
                "is back: if it did not change, no attempt was spent and the code can be submitted again",
                verification_id=verification_id,
            ) from exc
        log.info(
            "verification.checked",
            verification_id=verification_id,
            tenant=tenant.name,
            outcome=judgement.verdict,
        )
        metrics.CODE_CHECKS.labels(tenant.name, judgement.verdict).inc()
        return VerifyResult(
            valid=judgement.verdict == "approved",
            verification=judgement.verification.as_of(self._clock.now()),
        )

    def _release(self, verification_id: str, tenant: str, token: str, now: datetime) -> None:
        """Give the attempt back in the background; a reservation that lands later is void."""
        self._repairs.submit(
            "release_attempt",
            lambda: self._store.release(verification_id, token, now, tenant=tenant),
            verification_id=verification_id,
        )

    async def get(self, tenant: Tenant, verification_id: str) -> Verification:
        try:
            verification = await self._store.get(verification_id, tenant.name)
        except errors.StorageUnavailable as exc:
            raise errors.StorageUnavailable(
                "storage did not answer; nothing was changed", verification_id=verification_id
            ) from exc
        now = self._clock.now()
        retention = timedelta(seconds=self._settings.retention_seconds)
        if verification is None or now >= verification.expires_at + retention:
            raise errors.VerificationNotFound(verification_id)
        return verification.as_of(now)
