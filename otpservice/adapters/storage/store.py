"""Verifications in Redis: one hash per verification, every change one atomic, retry-safe script.

Why scripts: a check-then-write from Python would let parallel requests slip between the check and
the write. Each script reads and writes the record in one step, so 200 parallel guesses reserve at
most ``max_attempts`` attempts and a code is approved once. Every operation answers a typed result
or raises the domain error its refusal means; nothing else reads the scripts' replies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from otpservice.adapters.storage import keys
from otpservice.adapters.storage.budget import Budget, Refusal, refusal_of
from otpservice.adapters.storage.records import fields_of, pack_hash, text, to_verification, unpack_hash
from otpservice.adapters.storage.scripts import Storage
from otpservice.domain import errors
from otpservice.domain import limits as limit_lists
from otpservice.domain.clock import from_millis, to_millis
from otpservice.domain.limits import Limits
from otpservice.domain.verification import DeliveryStatus, Verification, VerificationStatus
from otpservice.tenants import DEFAULT_TENANT

Verdict = Literal["approved", "wrong", "max_attempts_reached"]
PlacementOutcome = Literal[
    "placed", "superseded", "canceled", "approved", "expired", "failed", "max_attempts_reached"
]
DeliveryOutcome = Literal["recorded", "duplicate", "stale", "foreign"]


@dataclass(frozen=True, slots=True)
class NewVerification:
    """What the service stores when it creates a verification, before its first call.

    ``call`` names its first call in the budgets (unique per request, so a give-back is exact).
    """

    id: str
    tenant: str
    call: str
    phone: str
    code_length: int
    ttl_seconds: int
    created_at: datetime
    expires_at: datetime
    resend_available_at: datetime
    max_attempts: int
    metadata: dict[str, Any]
    custom_code: bool = False
    webhook: bool = False  # its tenant has a webhook: its changes are recorded as events


@dataclass(frozen=True, slots=True)
class Started:
    """What a create did: ``created`` the new verification, or found the tenant's ``existing``
    pending verification of the number (and created nothing)."""

    outcome: Literal["created", "existing"]
    verification: Verification


@dataclass(frozen=True, slots=True)
class NumberPolicy:
    """The rules kept with a number's own keys: its call budget and its failure lock."""

    call_limits: Limits = ()
    failure_lock: Limits = ()

    def args(self) -> list[int]:
        """Both limit lists as the scripts take them: the lock first, then the budget."""
        return [*_limit_list(self.failure_lock), *_limit_list(self.call_limits)]


@dataclass(frozen=True, slots=True)
class AcceptedCode:
    """The hash of a code the verification accepts, and which of its calls carried it."""

    send_seq: int
    encoded_hash: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """One attempt reserved: the codes to compare against (two while a resend is unresolved)."""

    codes: tuple[AcceptedCode, ...]


@dataclass(frozen=True, slots=True)
class Judgement:
    """A judged attempt and the verification it left."""

    verdict: Verdict
    verification: Verification


@dataclass(frozen=True, slots=True)
class Placement:
    """A placed call recorded, and what the verification had become meanwhile.

    ``outcome`` is ``placed`` when it was still pending and this was its newest call; otherwise it
    names what happened first (``superseded`` by a newer call, or the status it reached).
    """

    outcome: PlacementOutcome
    verification: Verification


@dataclass(frozen=True, slots=True)
class SendCode:
    """A send's code hash, stored together with its placement when it came after the call was placed:
    ``token`` is that of the request that began the send ('' for send 1, which only its create begins)."""

    token: str
    encoded_hash: str


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """What a report of a call's outcome did.

    ``duplicate``: it would not advance the status; ``stale``: it is about an older call;
    ``foreign``: it names another call than the one the provider gave for this send.
    """

    outcome: DeliveryOutcome
    verification: Verification


class VerificationStore:
    """Verification records and their atomic state moves."""

    def __init__(
        self,
        storage: Storage,
        retention_seconds: int,
        policy: NumberPolicy | None = None,
        on_change: Callable[[], None] = lambda: None,
    ):
        self._storage = storage
        self._retention_ms = retention_seconds * 1000
        self._policy = policy or NumberPolicy()
        self._on_change = on_change  # told after every script: it may have recorded events

    @staticmethod
    def new_id(phone_e164: str, draw: Callable[[], str]) -> str:
        """A fresh verification id that lives in the number's shard (with the number's own keys)."""
        return keys.id_in_number_shard(phone_e164, draw)

    def _record_ttl_ms(self, now: datetime, expires_at: datetime) -> int:
        """Keep a record until its retention after expiry ends, so it can answer "expired"."""
        return max(1, to_millis(expires_at) - to_millis(now) + self._retention_ms)

    async def _run(
        self,
        script: str,
        verification_id: str,
        now: datetime,
        *args: object,
        tenant: str = "",
        schedule: bool = True,
        extra_keys: Sequence[str] = (),
    ) -> list[Any]:
        """Run a verification script; ``tenant`` '' acts for every tenant (callbacks, reconciler)."""
        record = keys.verification_key(verification_id)
        script_keys = [record, keys.schedule_key_for(verification_id)] if schedule else [record]
        script_keys.extend(extra_keys)
        reply = await self._storage.run(script, script_keys, (to_millis(now), tenant, *args))
        self._on_change()
        return cast(list[Any], reply)

    async def get(self, verification_id: str, tenant: str = "") -> Verification | None:
        """The verification, or None when there is none (or it belongs to another tenant)."""
        key = keys.verification_key(verification_id)
        raw = await self._storage.call(lambda: self._storage.client.hgetall(key), "get")
        fields = {text(k): text(v) for k, v in raw.items()}
        if not fields or (tenant and fields.get("tn", DEFAULT_TENANT) != tenant):
            return None
        return to_verification(verification_id, fields)

    async def due_to_expire(self, shard: int, now: datetime, most: int) -> list[str]:
        """Ids of a shard whose expiry has come (some may have been extended or ended meanwhile)."""
        key = keys.expiry_schedule_key(shard)
        ids = await self._storage.call(
            lambda: self._storage.client.zrangebyscore(key, "-inf", to_millis(now), start=0, num=most),
            "due_to_expire",
        )
        return [text(verification_id) for verification_id in ids]

    async def expire(self, verification_id: str, now: datetime) -> bool:
        """Store "expired" on a pending verification whose time passed; True when this call did."""
        reply = await self._storage.run(
            "expire",
            [
                keys.verification_key(verification_id),
                keys.expiry_schedule_key(keys.shard_of(verification_id)),
            ],
            [to_millis(now), ""],
        )
        self._on_change()
        return text(reply[0]) == "expired"

    @property
    def takes_budgets_in_create(self) -> bool:
        """Whether :meth:`create` can take the call's other budgets in its own script: on one server
        (or Sentinel's master) a script may touch any key; in a Cluster each budget has a slot of
        its own, and a script may touch one slot only, so there they are taken before, one script
        per slot (:class:`~otpservice.adapters.storage.budget.CallBudgets`)."""
        return self._storage.one_server

    async def create(
        self,
        new: NewVerification,
        code_hash: str | None,
        placement_deadline: datetime,
        budgets: Sequence[Budget] = (),
    ) -> Started | Refusal:
        """Store a pending verification whose first call (send 1) is about to be placed.

        In the same step: refuse while the number is locked for the tenant or its call budget is
        spent, and answer the tenant's pending verification of the number instead of a second one.
        ``budgets`` (only where :attr:`takes_budgets_in_create`) are the call's other budgets, taken
        first, all or none: a refusal by one of them is answered as a :class:`Refusal`, and every
        other refusal (and an existing verification) gives back what was taken.
        The code's hash comes with it, or (``None``) is stored by :meth:`store_code` while the call
        is placed, before the placement is recorded. Retrying is safe: the record is created once.
        """
        if budgets and not self.takes_budgets_in_create:
            raise ValueError("a Cluster's budgets are taken one slot at a time, before the create")
        fields = self._new_fields(new) | {"ns": "1", "dst": "queued", "ds": "0"}
        if code_hash is not None:
            params, packed = pack_hash(code_hash)
            fields |= {"nc": packed, "np": params}
        reply = await self._run(
            "create",
            new.id,
            new.created_at,
            "create",
            self._record_ttl_ms(new.created_at, new.expires_at),
            keys.scheduled_call(new.id, 1),
            to_millis(placement_deadline),
            new.id,
            new.phone,
            new.call,
            *self._policy.args(),
            *self._budget_args(budgets),
            *_flatten(fields),
            tenant=new.tenant,
            extra_keys=[*self._budget_keys(budgets), *keys.number_keys(new.phone, new.tenant)],
        )
        verdict, detail = text(reply[0]), text(reply[1]) if len(reply) > 1 else ""
        if verdict == "budget_refused":
            return self._refusal_of(budgets, reply, new.created_at)
        if verdict == "existing":
            return Started("existing", to_verification(detail, fields_of(reply[2:])))
        if verdict == "locked":
            raise errors.PhoneLocked(from_millis(int(detail)), _seconds_until(int(detail), new.created_at))
        if verdict == "phone_limited":
            raise errors.PhoneRateLimited(retry_after_seconds=-(-int(detail) // 1000))
        verification = self._answer(new.id, reply)[2]
        if verdict == "voided" or verification is None:
            raise errors.NotPending(VerificationStatus.FAILED)
        return Started("created", verification)

    @staticmethod
    def _budget_args(budgets: Sequence[Budget]) -> list[int]:
        """The other budgets as the scripts take them: how many, then each one's limit list."""
        return [len(budgets), *(value for budget in budgets for value in _limit_list(budget.limits))]

    @staticmethod
    def _budget_keys(budgets: Sequence[Budget]) -> list[str]:
        return [key for budget in budgets for key in keys.budget_keys(budget.subject)]

    @staticmethod
    def _refusal_of(budgets: Sequence[Budget], reply: list[Any], now: datetime) -> Refusal:
        """The refusal a script's ``budget_refused`` answer (each budget's wait, ms) names."""
        refusal = refusal_of(budgets, [int(wait) for wait in reply[1:]], to_millis(now))
        assert refusal is not None  # the scripts answer so only when one refused
        return refusal

    async def void_create(self, new: NewVerification, reason: str, now: datetime) -> None:
        """Make sure a verification whose first call was never placed is failed, never pending.

        Used when storing the create failed: that create may still land later (a stalled server
        applies what it had queued), so this writes the verification failed if it is not there yet.
        """
        fields = self._new_fields(new) | {
            "st": VerificationStatus.FAILED.value,
            "vd": "1",
            "ds": "1",
            "dst": DeliveryStatus.FAILED.value,
            "drs": reason,
        }
        await self._run(
            "create",
            new.id,
            now,
            "void",
            self._record_ttl_ms(new.created_at, new.expires_at),
            keys.scheduled_call(new.id, 1),
            reason,
            new.id,
            new.phone,
            new.call,
            *self._policy.args(),
            0,  # the other budgets are given back by the caller
            *_flatten(fields),
            tenant=new.tenant,
            extra_keys=keys.number_keys(new.phone, new.tenant),
        )

    @staticmethod
    def _new_fields(new: NewVerification) -> dict[str, str]:
        created = to_millis(new.created_at)
        fields = {
            "st": VerificationStatus.PENDING.value,
            "ph": new.phone,
            "cl": str(new.code_length),
            "tt": str(new.ttl_seconds),
            "ca": str(created),
            # every other time is kept in ms after "ca" (see lua/_prelude.lua)
            "ua": "0",
            "ex": str(to_millis(new.expires_at) - created),
            "ma": str(new.max_attempts),
            "sq": "1",
            "sn": "0",
            "ra": str(to_millis(new.resend_available_at) - created),
            "dua": "0",
        }
        if new.tenant != DEFAULT_TENANT:
            fields["tn"] = new.tenant
        if new.custom_code:
            fields["cc"] = "1"
        if new.webhook:
            fields["wh"] = "1"
        if new.metadata:
            fields["md"] = json.dumps(new.metadata, separators=(",", ":"))
        return fields

    async def begin_send(
        self,
        verification_id: str,
        now: datetime,
        *,
        tenant: str = "",
        token: str,
        cooldown_seconds: int,
        max_sends: int,
        ttl_seconds: int,
        placement_deadline: datetime,
        code_hash: str | None = None,
        same_code: bool = False,
        budgets: Sequence[Budget] = (),
        phone: str | None = None,
    ) -> int | Refusal:
        """Reserve the next call; answers the call's send number (or, when one of ``budgets`` refused
        it, the :class:`Refusal`: ``budgets`` are the call's other budgets, taken in the same step
        where :attr:`takes_budgets_in_create`, as :meth:`create` does).

        Its code's hash is ``code_hash``, or the current code's (``same_code``: one the tenant chose,
        said again), or neither: then :meth:`store_code` stores it under ``token`` while the call is
        placed. Until the placement resolves both the current code and the new one are accepted.
        The call is named ``<id>:<token>`` in the budgets (:func:`call_name`); a retry with the same
        token begins once. ``phone`` (E.164), when known, declares the number's keys to the script
        (see :func:`keys.number_keys`).
        """
        if budgets and not self.takes_budgets_in_create:
            raise ValueError("a Cluster's budgets are taken one slot at a time, before the begin")
        params, packed = pack_hash(code_hash) if code_hash else ("", "")
        mode = "hash" if code_hash else "same" if same_code else "later"
        reply = await self._run(
            "begin_send",
            verification_id,
            now,
            cooldown_seconds * 1000,
            max_sends,
            mode,
            packed,
            params,
            ttl_seconds * 1000,
            to_millis(placement_deadline),
            self._retention_ms,
            verification_id,
            token,
            *self._policy.args(),
            *self._budget_args(budgets),
            tenant=tenant,
            extra_keys=[
                *self._budget_keys(budgets),
                *(keys.number_keys(phone, tenant or "default") if phone else ()),
            ],
        )
        verdict, detail, _ = self._answer(verification_id, reply)
        if verdict == "begun":
            return int(detail)
        if verdict == "budget_refused":
            return self._refusal_of(budgets, reply, now)
        if verdict == "phone_limited":
            raise errors.PhoneRateLimited(retry_after_seconds=-(-int(detail) // 1000))
        if verdict == "voided":  # this request's begin landed after its request gave up
            raise errors.StorageUnavailable()
        if verdict == "too_soon":
            raise errors.ResendTooSoon(from_millis(int(detail)), _seconds_until(int(detail), now))
        if verdict == "max_sends":
            raise errors.SendLimitReached(
                f"this verification has used its {max_sends} calls; cancel it "
                f"(DELETE /otp/{verification_id}) or let it expire, then start again"
            )
        raise self._refusal(verification_id, now, verdict, detail)

    async def store_code(
        self,
        verification_id: str,
        now: datetime,
        send_seq: int,
        token: str,
        code_hash: str,
        *,
        tenant: str = "",
    ) -> bool:
        """Store the hash of send ``send_seq``'s code, begun without it by the request ``token``
        (send 1: ``""``, only its create begins it); see ``store_code.lua``.

        False when the send takes no code from this request: the verification ended, the send was
        undone (its call never left) or is another request's, or its code was promoted already.
        Retrying is safe.
        """
        params, packed = pack_hash(code_hash)
        reply = await self._run(
            "store_code",
            verification_id,
            now,
            send_seq,
            token,
            packed,
            params,
            tenant=tenant,
            schedule=False,
        )
        return text(reply[0]) == "stored"

    async def placed(
        self,
        verification_id: str,
        now: datetime,
        send_seq: int,
        call_id: str,
        *,
        ttl_seconds: int,
        check_outcome_at: datetime,
        code: SendCode | None = None,
    ) -> Placement:
        """Record that the provider took the call and named it; track it until its outcome is known.

        With ``code``, the send's code is stored first in the same script, as :meth:`store_code`
        would (one round trip where there would be two).
        """
        with_code: tuple[str, ...] = ()
        if code is not None:
            params, packed = pack_hash(code.encoded_hash)
            with_code = (code.token, packed, params)
        reply = await self._run(
            "placed",
            verification_id,
            now,
            send_seq,
            call_id,
            ttl_seconds * 1000,
            to_millis(check_outcome_at),
            self._retention_ms,
            keys.scheduled_call(verification_id, send_seq),
            *with_code,
        )
        verdict, detail, verification = self._answer(verification_id, reply)
        if verification is None:
            raise errors.VerificationNotFound(verification_id)
        outcome = detail if verdict == "not_pending" else verdict
        return Placement(outcome=cast(PlacementOutcome, outcome), verification=verification)

    async def unplaced(
        self,
        verification_id: str,
        now: datetime,
        send_seq: int,
        call: str,
        *,
        delivery: DeliveryStatus,
        reason: str,
        give_back_cooldown: bool,
        describe: bool,
        keep_call_counted: bool = False,
    ) -> Verification | None:
        """Record a call that surely never left; its code is dropped (see ``unplaced.lua``).
        ``keep_call_counted``: the code was lost, not the call, which may have rung."""
        reply = await self._run(
            "unplaced",
            verification_id,
            now,
            send_seq,
            delivery.value,
            reason,
            int(give_back_cooldown),
            int(describe),
            keys.scheduled_call(verification_id, send_seq),
            self._retention_ms,
            verification_id,
            call,
            limit_lists.longest_window_ms(self._policy.call_limits),
            int(keep_call_counted),
        )
        return self._answer(verification_id, reply)[2]

    async def placement_unknown(
        self, verification_id: str, now: datetime, send_seq: int, reason: str
    ) -> Verification | None:
        """Record that nobody knows whether the call was placed; its code stays accepted."""
        reply = await self._run(
            "placement_unknown",
            verification_id,
            now,
            send_seq,
            reason,
            keys.scheduled_call(verification_id, send_seq),
        )
        return self._answer(verification_id, reply)[2]

    async def reserve(
        self,
        verification_id: str,
        token: str,
        now: datetime,
        code_length: int,
        lease_until: datetime,
        *,
        tenant: str = "",
    ) -> Reservation:
        """Reserve one attempt before any hash is checked, leased until ``lease_until``.

        Nothing is reserved while the newest call's code hash is not stored yet (``reserve.lua``):
        :class:`~otpservice.domain.errors.CheckNotRecorded`, the code can be sent again.
        """
        reply = await self._run(
            "reserve",
            verification_id,
            now,
            token,
            code_length,
            to_millis(lease_until),
            *self._lock(),
            tenant=tenant,
            schedule=False,
        )
        words = [text(w) for w in reply]
        verdict, detail = words[0], words[1] if len(words) > 1 else ""
        if verdict == "reserved":
            current_seq, current_params, current, next_seq, next_params, upcoming = words[2:8]
            codes = tuple(
                AcceptedCode(int(seq), unpack_hash(params, packed))
                for seq, params, packed in (
                    (current_seq, current_params, current),
                    (next_seq, next_params, upcoming),
                )
                if packed
            )
            return Reservation(codes)
        if verdict == "bad_length":
            raise errors.InvalidCodeFormat(f"the code must have {detail} digits")
        if verdict == "locked":
            raise errors.PhoneLockedForChecks(from_millis(int(detail)), _seconds_until(int(detail), now))
        raise self._refusal(verification_id, now, verdict, detail)

    async def judge(
        self, verification_id: str, token: str, now: datetime, matched_send: int | None, *, tenant: str = ""
    ) -> Judgement:
        """Judge a reserved attempt; a retry with the same token gets the same verdict."""
        reply = await self._run(
            "judge",
            verification_id,
            now,
            token,
            matched_send or "",
            *self._lock(),
            tenant=tenant,
            schedule=False,
        )
        verdict, detail, verification = self._answer(verification_id, reply)
        if verdict in ("approved", "wrong", "max_attempts_reached") and verification is not None:
            return Judgement(cast(Verdict, verdict), verification)
        raise self._refusal(verification_id, now, verdict, detail)

    async def release(self, verification_id: str, token: str, now: datetime, *, tenant: str = "") -> None:
        """Give back what a request that gave up began under ``token`` (an attempt, or a resend not
        yet placed); a reservation or begin landing later changes nothing."""
        await self._run(
            "release",
            verification_id,
            now,
            token,
            verification_id,
            self._retention_ms,
            limit_lists.longest_window_ms(self._policy.call_limits),
            tenant=tenant,
        )

    async def cancel(
        self, verification_id: str, token: str, now: datetime, *, tenant: str = ""
    ) -> Verification:
        reply = await self._run("cancel", verification_id, now, token, tenant=tenant, schedule=False)
        verdict, detail, verification = self._answer(verification_id, reply)
        if verdict == "canceled" and verification is not None:
            return verification
        raise self._refusal(verification_id, now, verdict, detail)

    async def record_delivery(
        self,
        verification_id: str,
        now: datetime,
        send_seq: int,
        call_id: str,
        status: DeliveryStatus,
        provider_status: str,
        duration_seconds: int | None,
    ) -> DeliveryUpdate:
        """Record a call outcome unless it is stale, foreign, or would not advance the status."""
        reply = await self._run(
            "record_delivery",
            verification_id,
            now,
            send_seq,
            call_id,
            status.value,
            provider_status,
            "" if duration_seconds is None else duration_seconds,
            keys.scheduled_call(verification_id, send_seq),
        )
        verdict, _, verification = self._answer(verification_id, reply)
        if verification is None:
            raise errors.VerificationNotFound(verification_id)
        return DeliveryUpdate(cast(DeliveryOutcome, verdict), verification)

    def _lock(self) -> list[int]:
        return _limit_list(self._policy.failure_lock)

    @staticmethod
    def _answer(verification_id: str, reply: Sequence[Any]) -> tuple[str, str, Verification | None]:
        """A script's verdict, its detail, and the verification as the script left it."""
        verdict = text(reply[0])
        detail = text(reply[1]) if len(reply) > 1 else ""
        fields = fields_of(reply[2:])
        return verdict, detail, to_verification(verification_id, fields) if "st" in fields else None

    @staticmethod
    def _refusal(verification_id: str, now: datetime, verdict: str, detail: str) -> errors.VerificationError:
        """The domain error a script's refusal means."""
        if verdict == "not_found":
            return errors.VerificationNotFound(verification_id)
        if verdict == "not_pending":
            return errors.NotPending(VerificationStatus(detail))
        if verdict == "in_flight":
            return errors.AttemptsInFlight(retry_after_seconds=_seconds_until(int(detail), now))
        if verdict == "locked":
            return errors.PhoneLocked(from_millis(int(detail)), _seconds_until(int(detail), now))
        if verdict in ("released", "code_pending"):  # code_pending: the newest code is not stored yet
            return errors.CheckNotRecorded(verification_id, code_pending=verdict == "code_pending")
        raise RuntimeError(f"unexpected store answer {verdict!r}")


def _seconds_until(moment_ms: int, now: datetime) -> int:
    """Whole seconds from ``now`` until ``moment_ms``, rounded up, at least 1 (for Retry-After)."""
    return max(1, -(-(moment_ms - to_millis(now)) // 1000))


def call_name(verification_id: str, token: str) -> str:
    """How one call is named in every budget: unique per request, so a give-back is exact."""
    return f"{verification_id}:{token}"


def _limit_list(limits: Limits) -> list[int]:
    flat = limit_lists.flatten(limits)
    return [len(flat), *flat]


def _flatten(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]
