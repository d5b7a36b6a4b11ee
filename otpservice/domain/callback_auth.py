"""Per-call callback credentials: an HMAC of (verification id, send number) under a server key.

The provider's callback authentication is undocumented, so the credential travels inside the
callback URL we hand it (and as ``callback_apikey``, wherever that arrives). Being derived, it needs
no storage, and each call's credential is useless for any other call.
"""

from __future__ import annotations

import hashlib
import hmac


class CallbackSigner:
    """Issues and checks callback credentials."""

    def __init__(self, pepper: bytes):
        # A key of its own, derived so that one configured secret serves both purposes safely.
        self._key = hmac.new(pepper, b"otpservice/callback-credential/v1", hashlib.sha256).digest()

    def credential(self, verification_id: str, send_seq: int) -> str:
        message = f"{verification_id}:{send_seq}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def is_valid(self, verification_id: str, send_seq: int, presented: str) -> bool:
        """Constant-time check of one presented credential."""
        expected = self.credential(verification_id, send_seq)
        return hmac.compare_digest(expected.encode(), presented.strip().encode())
