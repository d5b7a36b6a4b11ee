"""One-time codes: how they are made and how they are kept (argon2id over a peppered HMAC).

The pepper is applied as HMAC-SHA256(pepper, verification id + code) before argon2id, because
argon2-cffi does not expose argon2's keyed ("secret") input. The result is the same property: a
Redis dump without the pepper cannot be brute-forced, even over a code space as small as 10^6.
Binding the verification id means a hash cannot be moved to another verification.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from otpservice.settings import Argon2Settings

RandomBelow = Callable[[int], int]
SALT_BYTES = 16
DIGEST_BYTES = 32


def generate_code(length: int, randbelow: RandomBelow = secrets.randbelow) -> str:
    """A uniformly random string of ``length`` decimal digits (leading zeros allowed)."""
    return "".join(str(randbelow(10)) for _ in range(length))


class CodeHasher:
    """Hashes and checks codes; CPU-bound and GIL-releasing, so callers run it in a thread pool."""

    def __init__(self, pepper: bytes, params: Argon2Settings):
        if not pepper:
            raise ValueError("a pepper is required")
        self._pepper = pepper
        self._argon2 = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost_kib,
            parallelism=params.parallelism,
            hash_len=DIGEST_BYTES,
            salt_len=SALT_BYTES,
            type=Type.ID,
        )

    def _keyed(self, verification_id: str, code: str) -> bytes:
        message = f"{verification_id}\x00{code}".encode()
        return hmac.new(self._pepper, message, hashlib.sha256).digest()

    def hash(self, verification_id: str, code: str) -> str:
        """The argon2id encoded hash of the peppered code."""
        return self._argon2.hash(self._keyed(verification_id, code))

    def matches(self, verification_id: str, code: str, encoded_hash: str) -> bool:
        """Whether ``code`` is the one hashed; the comparison inside argon2 is constant-time."""
        try:
            return self._argon2.verify(encoded_hash, self._keyed(verification_id, code))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
