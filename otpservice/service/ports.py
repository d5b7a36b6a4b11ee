"""What the service needs from the outside world, as protocols; the app wires real adapters in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from otpservice.adapters.autocall.models import AccessToken, CallFlight, CallPlacement, CallReport


class VoiceCaller(Protocol):
    """Places the call that reads the code, and reports on it (the Autocall client fits)."""

    async def place_otp_call(
        self,
        callees: Sequence[str],
        *,
        code: str,
        template_name: str,
        callback_url: str | None = None,
        callback_apikey: str | None = None,
        flight: CallFlight | None = None,
    ) -> CallPlacement: ...

    async def get_report(self, call_id: str) -> CallReport: ...

    async def get_token(self, *, force_refresh: bool = False) -> AccessToken: ...

    async def close(self) -> None: ...
