"""The request class of the app: Litestar's, with a body decoder that refuses what it cannot read."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request
from litestar.exceptions import InternalServerException

from otpservice.http.problems import problem

log = structlog.get_logger(__name__)
# What Litestar says when the client goes away before its body has arrived.
_CLIENT_GONE = "client disconnected prematurely"


class OtpRequest(Request[Any, Any, Any]):
    """Litestar's request; a JSON body the decoder gives up on is a 400 ``malformed_body``.

    Litestar turns msgspec's ``DecodeError`` into a 400 itself, but a body nested deeper than the
    decoder's stack (``RecursionError``) or one that is not UTF-8 (``UnicodeDecodeError``) escapes as
    an unhandled exception. Only here, where the body is decoded, do those errors mean a bad request:
    raised anywhere else they are the server's failure (500, logged with the traceback).
    """

    async def body(self) -> bytes:
        """The body; a client gone before sending all of it is the client's doing, not a failure.

        Litestar reports it as a 500, which would log a server error (with a traceback) for every
        dropped mobile connection and every slow client the server times out (408). Nothing is
        answered (nobody is listening); it is logged as information.
        """
        try:
            return await super().body()
        except InternalServerException as exc:
            if exc.detail != _CLIENT_GONE:
                raise
            log.info("http.client_gone", path=self.scope.get("path_template", ""))
            raise problem(
                400, "client_gone", "Client gone", "the client left before its body arrived"
            ) from None

    async def json(self) -> Any:
        await self.body()  # read first: only the decoding below is judged as the body's fault
        try:
            return await super().json()
        except RecursionError:
            raise problem(400, "malformed_body", "Malformed body", "the body is nested too deeply") from None
        except UnicodeDecodeError:
            raise problem(400, "malformed_body", "Malformed body", "the body is not UTF-8") from None
