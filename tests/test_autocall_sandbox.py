"""AutocallClient against the Autocall sandbox over real loopback HTTP: every endpoint and fault mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from otpservice.adapters.autocall import (
    AutocallClient,
    CallReport,
    CallReportNotFound,
    CallStatus,
    ProviderAuthFailed,
    ProviderRejectedRequest,
    ProviderUnavailable,
    create_http_client,
)
from otpservice.sandbox.config import EXAMPLE_SECRET_KEY, ProviderFaults, SandboxConfig
from otpservice.settings import AutocallSettings
from tests.support.sandbox import SandboxHandle, running_sandbox
from tests.support.servers import refused_port

TOKEN_PATH = "/api/v1/users/generate_access_token"
OTP_PATH = "/api/v2/campaigns/1/otp"
OTP_TEMPLATE = "template_otp_1"
ANSWERING = "0987654321"


class RequestLog:
    """Counts requests per path with an httpx event hook: what actually left the client."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def count(self, path: str) -> int:
        return self.paths.count(path)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox() as handle:
        yield handle


@pytest.fixture
def sandbox(shared_sandbox: SandboxHandle) -> Iterator[SandboxHandle]:
    """The module's sandbox, with faults and token lifetime back to defaults after each test."""
    yield shared_sandbox
    shared_sandbox.config.provider_faults = ProviderFaults()
    shared_sandbox.config.token_lifetime_seconds = SandboxConfig().token_lifetime_seconds


@pytest.fixture
def requests_sent() -> RequestLog:
    return RequestLog()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings_for(url: str, *, read_timeout: float = 5.0) -> AutocallSettings:
    return AutocallSettings(
        url=url, secret_key=EXAMPLE_SECRET_KEY, caller="0281234567", read_timeout_seconds=read_timeout
    )


@pytest.fixture
async def http(sandbox: SandboxHandle, requests_sent: RequestLog) -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client(settings_for(sandbox.url, read_timeout=0.5)) as http:
        http.event_hooks = {"request": [requests_sent], "response": []}
        yield http


@pytest.fixture
async def client(
    sandbox: SandboxHandle, http: httpx.AsyncClient, clock: FakeClock
) -> AsyncIterator[AutocallClient]:
    client = AutocallClient(
        base_url=sandbox.url, secret_key=EXAMPLE_SECRET_KEY, campaign_id="1", caller="0281234567", http=http,
        monotonic=clock, refresh_margin_seconds=10,
    )  # fmt: skip
    yield client
    await client.close()  # a token refresh still under way, before the HTTP client closes


async def call_otp(client: AutocallClient, *phones: str) -> list[str]:
    placement = await client.place_otp_call(
        list(phones or [ANSWERING]), code="482913", template_name=OTP_TEMPLATE
    )
    return list(placement.accepted)


async def final_report(client: AutocallClient, call_id: str) -> CallReport:
    """Poll the report until the call has ended (the sandbox ends calls right away by default)."""
    for _ in range(100):
        report = await client.get_report(call_id)
        if report.status is not None:
            return report
        await asyncio.sleep(0.02)
    raise AssertionError("the call never ended")


async def sandbox_calls(sandbox: SandboxHandle, phone: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient() as admin:
        answer = await admin.get(f"{sandbox.url}/_sandbox/calls", params={"phone": phone})
        calls: list[dict[str, object]] = answer.json()["calls"]
        return calls


async def test_otp_call_and_its_report(client: AutocallClient) -> None:
    """An OTP call to an ordinary number is accepted and its CDR ends ANSWERED with typed fields."""
    [call_id] = await call_otp(client)

    report = await final_report(client, call_id)

    assert (report.call_id, report.phone_number, report.call_type) == (call_id, ANSWERING, "OTP")
    assert (report.status, report.provider_status) == (CallStatus.ANSWERED, "ANSWERED")
    assert report.params == {"template_name": OTP_TEMPLATE, "code_otp": "482913"}
    assert report.created_at is not None
    assert report.created_at.utcoffset() is not None


async def test_magic_numbers_end_with_their_status(client: AutocallClient) -> None:
    """Each of the sandbox's magic numbers 0900000001..07 ends with the matching CallStatus."""
    expected = [
        CallStatus.NO_ANSWER, CallStatus.BUSY, CallStatus.CONGESTION, CallStatus.INVALID_NUMBER,
        CallStatus.ERROR, CallStatus.CANCELED, CallStatus.FAILED,
    ]  # fmt: skip
    call_ids = await call_otp(client, *(f"090000000{n}" for n in range(1, 8)))

    reports = [await final_report(client, call_id) for call_id in call_ids]

    assert [report.status for report in reports] == expected


async def test_partial_failure_names_each_rejected_callee(client: AutocallClient) -> None:
    """One request with a good, a blacklisted and a +84 number yields one call id and two reasons."""
    placement = await client.place_otp_call(
        [ANSWERING, "0900000008", "+84987654321"], code="482913", template_name=OTP_TEMPLATE
    )
    assert placement.call_id_for(ANSWERING) is not None
    assert [(r.phone, r.reason) for r in placement.rejected] == [
        ("0900000008", "Blacklist"),
        ("+84987654321", "Wrong Format"),
    ]


async def test_template_import_then_tts_call(client: AutocallClient) -> None:
    """An imported template places TTS calls; a missing key field is the provider's Missing TTS Key."""
    await client.import_template("nhac_no_test", "Chào {{customer_name}}, nợ {{due_amount}}")

    complete = await client.place_tts_call(
        [ANSWERING], template_name="nhac_no_test", params={"customer_name": "An", "due_amount": "10.410.000"}
    )
    incomplete = await client.place_tts_call(
        [ANSWERING], template_name="nhac_no_test", params={"customer_name": "An"}
    )

    assert len(complete.accepted) == 1
    assert [r.reason for r in incomplete.rejected] == ["Missing TTS Key"]
    with pytest.raises(ProviderRejectedRequest, match="already exists") as duplicate:
        await client.import_template("nhac_no_test", "again")
    assert duplicate.value.status_code == 400


async def test_unknown_report_is_not_found(client: AutocallClient) -> None:
    """A report for a call id the provider never issued raises CallReportNotFound."""
    with pytest.raises(CallReportNotFound):
        await client.get_report("1_1_1_5_no-such-call_0987654321")


async def test_unknown_campaign_is_rejected(sandbox: SandboxHandle, http: httpx.AsyncClient) -> None:
    """A campaign the account does not have is a 404 ProviderRejectedRequest with the provider's message."""
    client = AutocallClient(
        base_url=sandbox.url, secret_key=EXAMPLE_SECRET_KEY, campaign_id="99", caller="0", http=http
    )
    with pytest.raises(ProviderRejectedRequest, match="campaign 99 not found"):
        await call_otp(client)


async def test_wrong_secret_key_is_auth_failure(sandbox: SandboxHandle, http: httpx.AsyncClient) -> None:
    """A secret key the provider does not know raises ProviderAuthFailed, without echoing the key."""
    client = AutocallClient(
        base_url=sandbox.url, secret_key="not-the-key-123", campaign_id="1", caller="0", http=http
    )
    with pytest.raises(ProviderAuthFailed) as caught:
        await call_otp(client)
    assert "not-the-key-123" not in str(caught.value)


async def test_expired_tokens_are_refreshed_once(
    sandbox: SandboxHandle, client: AutocallClient, requests_sent: RequestLog
) -> None:
    """After the provider expires every token, the next call gets a 401, one new token and succeeds."""
    await call_otp(client)
    async with httpx.AsyncClient() as admin:
        (await admin.post(f"{sandbox.url}/_sandbox/tokens/expire")).raise_for_status()

    assert len(await call_otp(client)) == 1
    assert (requests_sent.count(TOKEN_PATH), requests_sent.count(OTP_PATH)) == (2, 3)


async def test_token_is_refreshed_before_its_lifetime_ends(
    sandbox: SandboxHandle, client: AutocallClient, clock: FakeClock, requests_sent: RequestLog
) -> None:
    """A 100 s token is reused until 10 s before it runs out, then replaced (in the background, while
    it still serves) without any 401."""
    sandbox.config.token_lifetime_seconds = 100
    first = await client.get_token()
    clock.now = 89
    await call_otp(client)
    clock.now = 91
    await call_otp(client)
    async with asyncio.timeout(5):
        while (await client.get_token()) is first:  # noqa: ASYNC110 - nothing signals the refresh
            await asyncio.sleep(0.005)

    assert first.lifetime_seconds == 100
    assert (requests_sent.count(TOKEN_PATH), requests_sent.count(OTP_PATH)) == (2, 2)


async def test_fifty_concurrent_calls_fetch_one_token(
    client: AutocallClient, requests_sent: RequestLog
) -> None:
    """Fifty concurrent first calls share a single token request."""
    results = await asyncio.gather(*(call_otp(client) for _ in range(50)))
    assert all(len(accepted) == 1 for accepted in results)
    assert (requests_sent.count(TOKEN_PATH), requests_sent.count(OTP_PATH)) == (1, 50)


async def test_hung_call_times_out_without_a_retry(
    sandbox: SandboxHandle, client: AutocallClient, requests_sent: RequestLog
) -> None:
    """A call the provider holds open past the read timeout may have rung, so it is sent exactly once."""
    await client.get_token()
    sandbox.config.provider_faults.hang = True

    with pytest.raises(ProviderUnavailable) as caught:
        await call_otp(client, "0987000111")

    assert caught.value.request_may_have_reached_provider
    assert requests_sent.count(OTP_PATH) == 1
    sandbox.config.provider_faults.hang = False
    assert len(await sandbox_calls(sandbox, "0987000111")) <= 1


async def test_hung_token_request_means_call_not_sent(
    sandbox: SandboxHandle, client: AutocallClient, requests_sent: RequestLog
) -> None:
    """When only the token request hangs, the error says the call itself was never sent."""
    sandbox.config.provider_faults.hang = True
    with pytest.raises(ProviderUnavailable) as caught:
        await call_otp(client)
    assert not caught.value.request_may_have_reached_provider
    assert requests_sent.count(OTP_PATH) == 0


async def test_closed_port_is_unavailable_and_not_sent(requests_sent: RequestLog) -> None:
    """Nothing listening (connection refused) is ProviderUnavailable that surely did not reach anyone."""
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}"
        async with create_http_client(settings_for(url)) as http:
            http.event_hooks = {"request": [requests_sent], "response": []}
            client = AutocallClient.from_settings(settings_for(url), http)
            with pytest.raises(ProviderUnavailable) as caught:
                await call_otp(client)
    assert not caught.value.request_may_have_reached_provider
    assert requests_sent.count(TOKEN_PATH) == 2  # the one connect-error retry


@pytest.mark.parametrize("status", [500, 503])
async def test_provider_errors_are_unavailable_and_not_retried(
    sandbox: SandboxHandle, client: AutocallClient, requests_sent: RequestLog, status: int
) -> None:
    """An injected 500 or 503 on a call is ProviderUnavailable that may have rung, sent exactly once."""
    await client.get_token()
    sandbox.config.provider_faults.error_status = status
    sandbox.config.provider_faults.error_rate = 1.0

    with pytest.raises(ProviderUnavailable) as caught:
        await call_otp(client)

    assert (caught.value.status_code, caught.value.request_may_have_reached_provider) == (status, True)
    assert requests_sent.count(OTP_PATH) == 1


async def test_latency_within_the_read_timeout_is_tolerated(
    sandbox: SandboxHandle, client: AutocallClient
) -> None:
    """A slow provider answering within the read timeout still places the call."""
    sandbox.config.provider_faults.latency_seconds = 0.2
    assert len(await call_otp(client)) == 1


async def test_latency_beyond_the_read_timeout_is_unavailable(
    sandbox: SandboxHandle, client: AutocallClient
) -> None:
    """A provider slower than the read timeout raises ProviderUnavailable that may have rung."""
    await client.get_token()
    sandbox.config.provider_faults.latency_seconds = 0.8
    with pytest.raises(ProviderUnavailable) as caught:
        await call_otp(client)
    assert caught.value.request_may_have_reached_provider
