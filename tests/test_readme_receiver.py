"""The webhook receiver the README shows works as written: it accepts signed events, refuses others."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from standardwebhooks import Webhook

from tests.support.receiver import new_secret

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def readme_receiver() -> Iterator[tuple[Any, str]]:
    """The README's receiver module, with a real secret in place of its placeholder."""
    block = re.search(r"```python\n(from litestar import Litestar.*?)```", README.read_text(), re.S)
    assert block, "the README's receiver example"
    secret = new_secret()
    module = types.ModuleType("readme_receiver")
    sys.modules[module.__name__] = module  # Litestar resolves the handler's annotations through it
    try:
        exec(block.group(1).replace('"whsec_..."', repr(secret)), module.__dict__)  # noqa: S102 - our README
        yield module.app, secret
    finally:
        del sys.modules[module.__name__]


def test_the_readme_receiver_verifies_events(readme_receiver: tuple[Any, str]) -> None:
    """A correctly signed event is accepted (204); a forged signature is refused (400)."""
    app, secret = readme_receiver
    body = json.dumps(
        {"type": "verification.approved", "timestamp": "", "data": {"delivery": {"status": "x"}}}
    )
    now = datetime.now(UTC)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(int(now.timestamp()))}
    with TestClient(app) as client:
        signed = Webhook(secret).sign("evt_1", now, body)
        assert (
            client.post(
                "/otp-events", content=body, headers=headers | {"webhook-signature": signed}
            ).status_code
            == 204
        )
        forged = headers | {"webhook-signature": "v1,AAAA"}
        assert client.post("/otp-events", content=body, headers=forged).status_code == 400
