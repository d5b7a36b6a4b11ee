"""Raw HTTP/1.1 over a socket, for tests of what a server does with bytes a client library would
never send (or of the exact bytes it answers)."""

from __future__ import annotations

import http.client
import io
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def problem(self) -> dict[str, object]:
        assert self.headers["content-type"] == "application/problem+json", self.headers
        problem: dict[str, object] = json.loads(self.body)
        assert problem["status"] == self.status
        assert problem["type"] == f"/problems/{problem['code']}"
        return problem


class _Received(io.BytesIO):
    """What a connection received, for http.client to parse as it parses a socket's bytes.

    http.client closes its file after each answer, as closing a socket's file leaves the socket
    open; closing this one is as harmless, so the next answer is read from where the last ended.
    """

    def makefile(self, _mode: str) -> _Received:
        return self

    def close(self) -> None:
        pass

    def more(self) -> bool:
        return self.tell() < len(self.getbuffer())


def parse_answers(data: bytes) -> list[Answer]:
    """The HTTP answers in ``data``, in order."""
    received = _Received(data)
    answers = []
    while received.more():
        response = http.client.HTTPResponse(received)  # type: ignore[arg-type]
        response.begin()
        answers.append(Answer(response.status, response.headers, response.read()))
    return answers


def connect(url: str) -> socket.socket:
    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    return bytes(received)


def read_answer(sock: socket.socket) -> Answer:
    """The next answer on a connection that stays open."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Answer(response.status, response.headers, response.read())
