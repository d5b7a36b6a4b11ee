"""AutocallClient against scripted answers (httpx.MockTransport), including what a sandbox cannot produce."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest

from otpservice.adapters.autocall import (
    AutocallClient,
    CallPlacement,
    CallReportNotFound,
    CallStatus,
    ProviderAuthFailed,
    ProviderMalformedResponse,
    ProviderRejectedRequest,
    ProviderUnavailable,
    create_http_client,
)
from otpservice.logs import configure_logging
from otpservice.service.provider_health import ProviderState, state_after
from otpservice.settings import AutocallSettings

SECRET = "secret-key-0123456789abcdef"
TOKEN_PATH = "/api/v1/users/generate_access_token"
OTP_PATH = "/api/v2/campaigns/7/otp"
CALL_ID = "1_1_1_5_cb76e372-b798-4a88-9c8a-410740f0300d_0987654321"
HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"

Answer = httpx.Response | Exception


def placed(*call_ids: str, fail: list[dict[str, str]] | None = None) -> httpx.Response:
    return httpx.Response(
        200, json={"data": {"campaign_id": "7", "results": {"success": list(call_ids), "fail": fail or []}}}
    )


class FakeAutocall:
    """Answers each path from a script (the last answer repeats); issues token-1, token-2... by default."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.scripts: dict[str, list[Answer]] = {OTP_PATH: [placed(CALL_ID)]}
        self.tokens_issued = 0
        self.delay_seconds = 0.0
        self.token_delay_seconds = 0.0  # added to the token endpoint's answers

    def on(self, path: str, *answers: Answer) -> None:
        self.scripts[path] = list(answers)

    def count(self, path: str) -> int:
        return sum(1 for request in self.requests if request.url.path == path)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await asyncio.sleep(
            self.delay_seconds + (self.token_delay_seconds if request.url.path == TOKEN_PATH else 0)
        )
        script = self.scripts.get(request.url.path)
        if not script and request.url.path == TOKEN_PATH:
            self.tokens_issued += 1
            return httpx.Response(
                200, json={"data": {"access_token": f"token-{self.tokens_issued}", "expire_at": 300}}
            )
        assert script, f"unscripted request {request.method} {request.url}"
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeAutocall:
    return FakeAutocall()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http(fake: FakeAutocall) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
        yield http


@pytest.fixture
def client(http: httpx.AsyncClient, clock: FakeClock) -> AutocallClient:
    return AutocallClient(
        base_url="http://autocall.test/", secret_key=SECRET, campaign_id="7", caller="0281234567", http=http,
        monotonic=clock,
    )  # fmt: skip


async def place(client: AutocallClient, phone: str = "0987654321") -> CallPlacement:
    return await client.place_otp_call([phone], code="123456", template_name="template_otp_1")


async def test_otp_call_sends_documented_body_with_raw_token(
    client: AutocallClient, fake: FakeAutocall
) -> None:
    """An OTP call is a POST of caller, callees and params with the raw token, callback fields omitted."""
    placement = await place(client)

    token_request, call_request = fake.requests
    assert json.loads(token_request.content) == {"secret_key": SECRET}
    assert call_request.method == "POST"
    assert call_request.url == "http://autocall.test/api/v2/campaigns/7/otp"
    assert call_request.headers["Authorization"] == "token-1"
    assert json.loads(call_request.content) == {
        "caller": "0281234567",
        "callees": ["0987654321"],
        "params": {"template_name": "template_otp_1", "code_otp": "123456"},
    }
    assert placement == CallPlacement(campaign_id="7", accepted=(CALL_ID,), rejected=())


async def test_callback_fields_are_sent_when_given(client: AutocallClient, fake: FakeAutocall) -> None:
    """callback_url and callback_apikey travel at the top level of the body when the caller sets them."""
    await client.place_otp_call(
        ["0987654321"], code="1", template_name="t", callback_url="https://x.test/cb", callback_apikey="k"
    )
    body = json.loads(fake.requests[-1].content)
    assert (body["callback_url"], body["callback_apikey"]) == ("https://x.test/cb", "k")


@pytest.mark.parametrize(
    "answer",
    [
        {"message": "OK", "code": 200, "status": True, "data": None},
        {"data": "debt"},
        {"data": []},
        {},
    ],
)
async def test_a_template_import_answered_2xx_in_any_shape_succeeds(
    client: AutocallClient, fake: FakeAutocall, answer: dict[str, object]
) -> None:
    """The import's answer shape is unknown: any 2xx is the template created, its body kept whole."""
    fake.on("/api/v2/campaigns/7/voice/import", httpx.Response(200, json=answer))
    imported = await client.import_template("debt", "Pay {{due_amount}}")
    assert imported.name == "debt"


async def test_tts_call_and_import_use_their_own_paths(client: AutocallClient, fake: FakeAutocall) -> None:
    """Run-TTS posts to /voice with the key fields beside template_name; import posts name and content."""
    fake.on("/api/v2/campaigns/7/voice", placed(CALL_ID))
    fake.on("/api/v2/campaigns/7/voice/import", httpx.Response(200, json={"data": {"id": 3}}))

    await client.place_tts_call(["0987654321"], template_name="debt", params={"due_amount": "10.410.000"})
    imported = await client.import_template("debt", "Pay {{due_amount}}")

    tts, template = fake.requests[-2:]
    assert json.loads(tts.content)["params"] == {"template_name": "debt", "due_amount": "10.410.000"}
    assert json.loads(template.content) == {"name": "debt", "content": "Pay {{due_amount}}"}
    assert (imported.name, imported.raw) == ("debt", {"id": 3})
    with pytest.raises(ValueError, match="template_name"):
        await client.place_tts_call(["0987654321"], template_name="x", params={"template_name": "y"})


async def test_report_path_encodes_the_call_id(client: AutocallClient, fake: FakeAutocall) -> None:
    """The call id is one URL path segment: slashes and spaces in it are percent-encoded."""
    fake.on("/api/v2/report/a/b c", httpx.Response(200, json={"data": {"id": "a/b c", "status": ""}}))

    report = await client.get_report("a/b c")

    assert fake.requests[-1].url.raw_path == b"/api/v2/report/a%2Fb%20c"
    assert (report.call_id, report.status) == ("a/b c", None)


async def test_partial_failure_is_a_result(client: AutocallClient, fake: FakeAutocall) -> None:
    """A callee the provider refuses comes back as a rejection with its reason, beside accepted ones."""
    fake.on(OTP_PATH, placed(CALL_ID, fail=[{"12345": "Wrong Format"}, {"0900000008": "Blacklist"}]))

    placement = await client.place_otp_call(
        ["0987654321", "12345", "0900000008"], code="1", template_name="t"
    )

    assert placement.call_id_for("0987654321") == CALL_ID
    assert placement.rejection_for("12345") is not None
    assert [(r.phone, r.reason) for r in placement.rejected] == [
        ("12345", "Wrong Format"),
        ("0900000008", "Blacklist"),
    ]


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the event loop (a background refresh runs meanwhile) for up to 2 s."""
    async with asyncio.timeout(2):
        while not condition():  # noqa: ASYNC110 - the client signals nothing when a refresh lands
            await asyncio.sleep(0.001)
    assert condition(), what


async def test_token_is_reused_until_the_refresh_margin(
    http: httpx.AsyncClient, fake: FakeAutocall, clock: FakeClock
) -> None:
    """A 300 s token is reused for 240 s with a 60 s margin; then it still serves, at once, while a new
    one is fetched in the background, and the new one serves from then on."""
    client = AutocallClient(
        base_url="http://autocall.test", secret_key=SECRET, campaign_id="7", caller="c", http=http,
        monotonic=clock, refresh_margin_seconds=60,
    )  # fmt: skip
    first = await client.get_token()
    clock.now += 239
    assert await client.get_token() is first
    assert fake.count(TOKEN_PATH) == 1
    clock.now += 2
    assert await client.get_token() is first
    async with asyncio.timeout(2):  # the refresh lands in the background
        while (await client.get_token()).value != "token-2":  # noqa: ASYNC110 - nothing signals it
            await asyncio.sleep(0.001)
    assert fake.count(TOKEN_PATH) == 2


async def test_margin_is_capped_for_short_lived_tokens(
    http: httpx.AsyncClient, fake: FakeAutocall, clock: FakeClock
) -> None:
    """A token shorter-lived than the margin is still reused for half its lifetime, not fetched per call."""
    fake.on(TOKEN_PATH, httpx.Response(200, json={"data": {"access_token": "short", "expire_at": "10"}}))
    client = AutocallClient(
        base_url="http://autocall.test", secret_key=SECRET, campaign_id="7", caller="c", http=http,
        monotonic=clock, refresh_margin_seconds=60,
    )  # fmt: skip
    await client.get_token()
    clock.now += 4
    await client.get_token()
    assert fake.count(TOKEN_PATH) == 1
    clock.now += 2
    await client.get_token()
    await _until(lambda: fake.count(TOKEN_PATH) == 2, "a second token fetched")


async def test_a_call_in_the_refresh_margin_does_not_wait_for_the_token_endpoint(
    client: AutocallClient, fake: FakeAutocall, clock: FakeClock
) -> None:
    """A token endpoint that hangs while the held token is in its refresh margin delays no call: the
    held token places it, and the refresh goes on alone."""
    await client.get_token()
    clock.now += 280  # inside the 60 s margin, 20 s before the token expires
    fake.token_delay_seconds = 30
    async with asyncio.timeout(1):
        await place(client)
    placed_with = [request for request in fake.requests if request.url.path == OTP_PATH]
    assert placed_with[-1].headers["Authorization"] == "token-1"
    assert fake.count(TOKEN_PATH) == 2  # the refresh, still waiting for its answer


async def test_concurrent_calls_share_one_token_request(client: AutocallClient, fake: FakeAutocall) -> None:
    """Fifty concurrent calls with no token yet cause exactly one token request."""
    fake.delay_seconds = 0.01
    await asyncio.gather(*(place(client) for _ in range(50)))
    assert (fake.count(TOKEN_PATH), fake.count(OTP_PATH)) == (1, 50)


async def test_force_refresh_fetches_a_new_token(client: AutocallClient, fake: FakeAutocall) -> None:
    """get_token(force_refresh=True) replaces a still-fresh token."""
    first = await client.get_token()
    assert (await client.get_token(force_refresh=True)).value != first.value


async def test_a_refresh_that_fails_keeps_the_token_held(client: AutocallClient, fake: FakeAutocall) -> None:
    """A forced refresh the token endpoint fails (a readiness check) leaves the token held in use."""
    issued = httpx.Response(200, json={"data": {"access_token": "token-1", "expire_at": 300}})
    fake.on(TOKEN_PATH, issued, httpx.Response(503, text="down"))
    await client.get_token()
    with pytest.raises(ProviderUnavailable):
        await client.get_token(force_refresh=True)
    await place(client)
    assert fake.requests[-1].headers["Authorization"] == "token-1"


async def test_a_token_in_its_refresh_margin_serves_while_the_refresh_fails(
    client: AutocallClient, fake: FakeAutocall, clock: FakeClock
) -> None:
    """A token inside its refresh margin, whose early refresh fails, still places calls until its
    lifetime ends."""
    issued = httpx.Response(200, json={"data": {"access_token": "token-1", "expire_at": 300}})
    fake.on(TOKEN_PATH, issued, httpx.Response(503, text="down"))
    await client.get_token()
    clock.now += 280  # inside the 60 s margin, 20 s before it expires
    await place(client)
    placed_with = [request for request in fake.requests if request.url.path == OTP_PATH]
    assert placed_with[-1].headers["Authorization"] == "token-1"
    clock.now += 30  # expired
    with pytest.raises(ProviderUnavailable):
        await place(client)


async def test_a_token_endpoint_answering_404_is_a_failing_provider(
    client: AutocallClient, fake: FakeAutocall
) -> None:
    """A token endpoint answering 404 (a wrong URL path) is a failing provider, not a refused request."""
    fake.on(TOKEN_PATH, httpx.Response(404, text="Not Found"))
    with pytest.raises(ProviderMalformedResponse):
        await client.get_token()
    assert state_after(client.last_contact[1]) is ProviderState.FAILING


async def test_401_refreshes_once_and_retries(client: AutocallClient, fake: FakeAutocall) -> None:
    """A 401 on a call gets one new token and one resend, which succeeds."""
    fake.on(OTP_PATH, httpx.Response(401, json={"data": {"error": "token expired"}}), placed(CALL_ID))

    placement = await place(client)

    assert placement.accepted == (CALL_ID,)
    assert [r.headers.get("Authorization") for r in fake.requests] == [None, "token-1", None, "token-2"]


async def test_concurrent_401s_share_one_refresh(client: AutocallClient, fake: FakeAutocall) -> None:
    """Twenty calls rejected with the same stale token trigger one refresh, not twenty."""
    await client.get_token()
    fake.delay_seconds = 0.01
    fake.on(OTP_PATH, *[httpx.Response(401)] * 20, placed(CALL_ID))

    await asyncio.gather(*(place(client) for _ in range(20)))

    assert fake.count(TOKEN_PATH) == 2


async def test_second_401_is_auth_failure(client: AutocallClient, fake: FakeAutocall) -> None:
    """A call refused again with a fresh token raises ProviderAuthFailed after exactly one refresh."""
    fake.on(OTP_PATH, httpx.Response(401))
    with pytest.raises(ProviderAuthFailed):
        await place(client)
    assert (fake.count(TOKEN_PATH), fake.count(OTP_PATH)) == (2, 2)


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_refused_secret_key_is_auth_failure_without_the_key(
    client: AutocallClient, fake: FakeAutocall, status: int
) -> None:
    """A refused secret key raises ProviderAuthFailed whose message never repeats the key."""
    fake.on(TOKEN_PATH, httpx.Response(status, json={"message": f"invalid secret_key {SECRET}"}))
    with pytest.raises(ProviderAuthFailed) as caught:
        await place(client)
    assert SECRET not in str(caught.value)
    assert fake.count(OTP_PATH) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"data": {"error": "campaign not found"}}, "campaign not found"),
        ({"messsage": "Bad Request", "code": 400, "status": False, "data": {"error": "caller invalid"}},
         "caller invalid"),
        ({"messsage": "Bad Request", "code": 400, "status": False}, "Bad Request"),
        ({"message": "Forbidden", "code": 403, "status": False, "data": {}}, "Forbidden"),
    ],
)  # fmt: skip
async def test_4xx_carries_the_providers_message(
    client: AutocallClient, fake: FakeAutocall, body: dict[str, object], message: str
) -> None:
    """Every error envelope the provider has used yields ProviderRejectedRequest with its message."""
    fake.on(OTP_PATH, httpx.Response(400, json=body))
    with pytest.raises(ProviderRejectedRequest) as caught:
        await place(client)
    assert (str(caught.value), caught.value.status_code) == (message, 400)
    assert fake.count(OTP_PATH) == 1


async def test_report_404_is_report_not_found(client: AutocallClient, fake: FakeAutocall) -> None:
    """A 404 for a report raises CallReportNotFound, a ProviderRejectedRequest."""
    fake.on(f"/api/v2/report/{CALL_ID}", httpx.Response(404, json={"data": {"error": "not found"}}))
    with pytest.raises(CallReportNotFound):
        await client.get_report(CALL_ID)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text=HTML, headers={"content-type": "text/html"}),
        httpx.Response(200, content=b'{"data": {"campaign_id": "7", "results": {"succ'),
        httpx.Response(200, json={"message": "OK", "code": 200, "status": True}),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"data": {"campaign_id": "7"}}),
        httpx.Response(302, headers={"location": "http://elsewhere.test"}),
    ],
    ids=["html-200", "truncated", "no-data", "array", "no-results", "redirect"],
)
async def test_unreadable_answer_is_malformed(
    client: AutocallClient, fake: FakeAutocall, answer: Answer
) -> None:
    """An answer we cannot read raises ProviderMalformedResponse, flagged as possibly having placed a call."""
    fake.on(OTP_PATH, answer)
    with pytest.raises(ProviderMalformedResponse) as caught:
        await place(client)
    assert caught.value.request_may_have_reached_provider
    assert fake.count(OTP_PATH) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_unavailable_and_may_have_reached(
    client: AutocallClient, fake: FakeAutocall, status: int
) -> None:
    """A 5xx answer, JSON or a proxy's HTML, is ProviderUnavailable that may have rung, and is not retried."""
    fake.on(OTP_PATH, httpx.Response(status, text=HTML, headers={"content-type": "text/html"}))
    with pytest.raises(ProviderUnavailable) as caught:
        await place(client)
    assert (caught.value.request_may_have_reached_provider, caught.value.status_code) == (True, status)
    assert fake.count(OTP_PATH) == 1


async def test_connect_error_is_retried_once(client: AutocallClient, fake: FakeAutocall) -> None:
    """A connect error (nothing sent) is retried once, and the retry's answer is used."""
    fake.on(OTP_PATH, httpx.ConnectError("refused"), placed(CALL_ID))
    assert (await place(client)).accepted == (CALL_ID,)
    assert fake.count(OTP_PATH) == 2


async def test_connect_error_twice_is_unavailable_not_sent(
    client: AutocallClient, fake: FakeAutocall
) -> None:
    """Two connect errors raise ProviderUnavailable saying the request surely did not reach the provider."""
    fake.on(OTP_PATH, httpx.ConnectError("refused"))
    with pytest.raises(ProviderUnavailable) as caught:
        await place(client)
    assert not caught.value.request_may_have_reached_provider
    assert fake.count(OTP_PATH) == 2


@pytest.mark.parametrize(
    ("error", "may_have_reached"),
    [
        (httpx.ConnectTimeout("connect timed out"), False),
        (httpx.PoolTimeout("pool exhausted"), False),
        (httpx.ReadTimeout("read timed out"), True),
        (httpx.WriteTimeout("write timed out"), True),
        (httpx.RemoteProtocolError("server disconnected"), True),
        (httpx.ReadError("connection reset"), True),
    ],
)
async def test_transport_failures_are_never_retried(
    client: AutocallClient, fake: FakeAutocall, error: Exception, may_have_reached: bool
) -> None:
    """Timeouts and dropped connections raise ProviderUnavailable after a single attempt."""
    fake.on(OTP_PATH, error, placed(CALL_ID))
    with pytest.raises(ProviderUnavailable) as caught:
        await place(client)
    assert caught.value.request_may_have_reached_provider is may_have_reached
    assert fake.count(OTP_PATH) == 1


async def test_token_failure_before_a_call_says_nothing_was_sent(
    client: AutocallClient, fake: FakeAutocall
) -> None:
    """When the token request times out, the call was never sent: request_may_have_reached_provider False."""
    fake.on(TOKEN_PATH, httpx.ReadTimeout("read timed out"))
    with pytest.raises(ProviderUnavailable) as caught:
        await place(client)
    assert not caught.value.request_may_have_reached_provider
    fake.on(TOKEN_PATH, httpx.Response(200, text=HTML))
    with pytest.raises(ProviderMalformedResponse) as malformed:
        await place(client)
    assert not malformed.value.request_may_have_reached_provider
    assert fake.count(OTP_PATH) == 0


async def test_report_parses_the_cdr(client: AutocallClient, fake: FakeAutocall) -> None:
    """A finished call's CDR comes back typed: our status, aware Vietnam times, decoded params."""
    cdr = {
        "campaign_id": "1", "code_otp": "M43TUI", "created_at": "2021-01-11 11:28:45", "duration": 15,
        "ended_at": "2021-01-11 11:29:09", "id": CALL_ID, "keypress": "127", "param": '{"code_otp":"M43TUI"}',
        "phone_number": "0987654321", "started_at": "2021-01-11 11:28:54", "status": "NOANWSER",
        "type": "OTP", "user_id": 5,
    }  # fmt: skip
    fake.on(f"/api/v2/report/{CALL_ID}", httpx.Response(200, json={"data": cdr}))

    report = await client.get_report(CALL_ID)

    assert (report.status, report.provider_status, report.user_id) == (CallStatus.NO_ANSWER, "NOANWSER", "5")
    assert report.started_at == datetime(2021, 1, 11, 4, 28, 54, tzinfo=UTC)
    assert (report.params, report.code_otp, report.duration_seconds) == ({"code_otp": "M43TUI"}, "M43TUI", 15)
    assert "M43TUI" not in repr(report)


async def test_logs_hold_no_secret_token_code_or_full_number(
    client: AutocallClient, fake: FakeAutocall
) -> None:
    """Logs of a flow with a refresh and failures name events but never the key, tokens, code or number.

    Read as the service writes them (its logging pipeline into a stream of the test's own): loggers
    are cached on first use, and structlog's capture_logs misses one cached under an earlier
    configuration (a test that used the client, then one that configured logging again).
    """
    fake.on(OTP_PATH, httpx.Response(401), placed(CALL_ID), httpx.Response(400, json={"message": "no"}))
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        await place(client)
        with pytest.raises(ProviderRejectedRequest):
            await place(client)
    finally:
        configure_logging("INFO")
    logs = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue() + repr(client) + repr(await client.get_token())
    for leaked in (SECRET, "token-1", "token-2", "123456", "0987654321"):
        assert leaked not in text
    assert "0987****21" in text
    assert {"autocall.token.obtained", "autocall.token.rejected", "autocall.call.placed"} <= {
        entry["event"] for entry in logs
    }


async def test_provider_text_repeating_the_code_or_number_reaches_no_log_or_error(
    client: AutocallClient, fake: FakeAutocall
) -> None:
    """A provider answer that repeats the code or the number it was sent (a rejection's reason, a 4xx
    message) has them taken out, in the log lines, the error raised and the reason answered."""
    fake.on(
        OTP_PATH,
        placed(fail=[{"0987654321": "Blacklist 0987654321"}]),
        httpx.Response(400, json={"message": "invalid code_otp 123456 for 0987654321"}),
    )
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        refused = await place(client)
        with pytest.raises(ProviderRejectedRequest) as caught:
            await place(client)
    finally:
        configure_logging("INFO")
    assert [r.reason for r in refused.rejected] == ["Blacklist [sent value]"]  # stored and shown as is
    text = stream.getvalue() + str(caught.value)
    assert "123456" not in text
    assert "0987654321" not in text
    assert str(caught.value) == "invalid code_otp [sent value] for [sent value]"


async def test_create_http_client_uses_separate_timeouts() -> None:
    """The pool built from settings has the configured connect and read timeouts."""
    settings = AutocallSettings(connect_timeout_seconds=1.5, read_timeout_seconds=7.0)
    async with create_http_client(settings) as http:
        assert (http.timeout.connect, http.timeout.read) == (1.5, 7.0)


async def test_empty_or_string_callees_are_refused(client: AutocallClient) -> None:
    """A call needs a list of callees: an empty list or a bare string is a programming error."""
    with pytest.raises(ValueError, match="callee"):
        await client.place_otp_call([], code="1", template_name="t")
    with pytest.raises(TypeError):
        await client.place_otp_call("0987654321", code="1", template_name="t")


async def test_closing_stops_a_token_refresh_under_way(
    client: AutocallClient, fake: FakeAutocall, clock: FakeClock
) -> None:
    """Closing the client stops a background token refresh still waiting for its answer, so nothing
    runs on after the HTTP client closes."""
    await client.get_token()
    clock.now += 280
    fake.token_delay_seconds = 30
    await client.get_token()  # the held token, with a refresh started behind it
    await _until(lambda: fake.count(TOKEN_PATH) == 2, "the refresh waiting for its answer")
    async with asyncio.timeout(1):
        await client.close()
