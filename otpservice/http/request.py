"""The request class of the app: Litestar's, with a body decoder that refuses what it cannot read."""

from __future__ import annotations

from typing import Any

from litestar import Request

from otpservice.http.problems import problem


class OtpRequest(Request[Any, Any, Any]):
    """Litestar's request; a JSON body the decoder gives up on is a 400 ``malformed_body``.

    Litestar turns msgspec's ``DecodeError`` into a 400 itself, but a body nested deeper than the
    decoder's stack (``RecursionError``) or one that is not UTF-8 (``UnicodeDecodeError``) escapes as
    an unhandled exception. Only here, where the body is decoded, do those errors mean a bad request:
    raised anywhere else they are the server's failure (500, logged with the traceback).
    """

    async def json(self) -> Any:
        await self.body()  # read first: only the decoding below is judged as the body's fault
        try:
            return await super().json()
        except RecursionError:
            raise problem(400, "malformed_body", "Malformed body", "the body is nested too deeply") from None
        except UnicodeDecodeError:
            raise problem(400, "malformed_body", "Malformed body", "the body is not UTF-8") from None
