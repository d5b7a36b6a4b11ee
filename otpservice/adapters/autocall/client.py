"""Async client for TEL4VN Autocall: token, OTP and TTS calls, template import, call reports.

Retry policy (a retried call-placing request can ring a user twice):

* A request is retried at most once, and only when httpx raised ``ConnectError`` (refused, reset or
  unresolvable before the connection existed): nothing was sent, so a retry cannot ring anyone.
  This holds for every endpoint, call-placing ones included.
* A call that answers 401 gets one new token and is sent once more; a second 401 raises
  ProviderAuthFailed. A 401 means the provider refused the request, so nothing was placed.
* Nothing else is retried here: not connect timeouts (the budget is spent), not read or write
  timeouts, dropped connections or 5xx (the provider may have acted), not 4xx. Whoever calls decides,
  using ``request_may_have_reached_provider``.

Errors: unreachable or timed out -> ProviderUnavailable (``request_may_have_reached_provider`` False
when the request surely was not sent, True after a read/write timeout, a dropped connection or any
5xx, HTML or not); 4xx -> ProviderRejectedRequest with the provider's message (CallReportNotFound for
a 404 report); refused secret key or a fresh token refused -> ProviderAuthFailed; a 2xx (or 1xx/3xx)
answer we cannot read -> ProviderMalformedResponse. Failures while obtaining the token before a call
is sent carry ``request_may_have_reached_provider=False``: the call itself was never sent.

The secret key and tokens never appear in logs, exception messages or reprs; callee numbers are
logged masked, OTP codes never.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Literal
from urllib.parse import quote, urlsplit

import httpx
import structlog

from otpservice.adapters.autocall.masking import mask_call_id
from otpservice.adapters.autocall.models import (
    AccessToken,
    AutocallError,
    CallFlight,
    CallPlacement,
    CallReport,
    CallReportNotFound,
    ProviderAuthFailed,
    ProviderMalformedResponse,
    ProviderRejectedRequest,
    ProviderUnavailable,
    TemplateImport,
)
from otpservice.adapters.autocall.parsing import (
    any_answer,
    error_message,
    parse_placement,
    parse_report,
    parse_template_import,
    parse_token,
    response_data,
)
from otpservice.adapters.autocall.tokens import TokenCache
from otpservice.domain.phone import mask_phone
from otpservice.service import metrics
from otpservice.settings import AutocallSettings

log = structlog.get_logger(__name__)

Operation = Literal["token", "otp_call", "template_import", "tts_call", "report"]
CONNECT_RETRY_DELAY_SECONDS = 0.1
# The token endpoint answers these when the secret key is wrong; our body is always well formed.
_REFUSED_KEY_STATUSES = frozenset({400, 401, 403})


def create_http_client(settings: AutocallSettings, tls: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """The one connection pool per process; its owner (the app lifespan, a CLI command) closes it.

    ``tls``: a trust store already loaded (loading the default one costs tens of milliseconds).
    """
    return httpx.AsyncClient(
        verify=tls or True,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.read_timeout_seconds,
            pool=settings.connect_timeout_seconds,
        ),
        # A short keep-alive expiry makes reusing a connection the provider has already closed (which
        # would fail a call-placing POST ambiguously) unlikely.
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=15.0),
        headers={"User-Agent": "otpservice-autocall"},
        follow_redirects=False,
    )


class AutocallClient:
    """One Autocall account and campaign, over a pool the caller owns."""

    def __init__(
        self,
        *,
        base_url: str,
        secret_key: str,
        campaign_id: str,
        caller: str,
        http: httpx.AsyncClient,
        monotonic: Callable[[], float] = time.monotonic,
        refresh_margin_seconds: float = 60.0,
    ):
        self._base_url = base_url.rstrip("/")
        self.host = urlsplit(self._base_url).netloc  # named in every failure logged, never a secret
        self._secret_key = secret_key
        self._campaign_path = f"/api/v2/campaigns/{quote(campaign_id, safe='')}"
        self._campaign_id = campaign_id
        self._caller = caller
        self._http = http
        self._monotonic = monotonic
        self._tokens = TokenCache(
            self._request_token, monotonic=monotonic, refresh_margin_seconds=refresh_margin_seconds
        )
        # What the provider did last, as (a count of answers and failures, the failure or None): lets a
        # readiness probe learn from real traffic instead of asking the provider itself.
        self.last_contact: tuple[int, AutocallError | None] = (0, None)

    @classmethod
    def from_settings(cls, settings: AutocallSettings, http: httpx.AsyncClient) -> AutocallClient:
        """A client for the configured account, campaign and caller number."""
        return cls(
            base_url=settings.url,
            secret_key=settings.secret_key,
            campaign_id=settings.campaign_id,
            caller=settings.caller,
            http=http,
        )

    def __repr__(self) -> str:
        return f"AutocallClient(base_url={self._base_url!r}, campaign_id={self._campaign_id!r})"

    async def close(self) -> None:
        """Stop what runs in the background (a token refresh); before closing the HTTP client."""
        await self._tokens.close()

    async def get_token(self, *, force_refresh: bool = False) -> AccessToken:
        """The cached token while fresh, else a new one (one request however many tasks wait)."""
        return await self._tokens.get(force_refresh=force_refresh)

    async def place_otp_call(
        self,
        callees: Sequence[str],
        *,
        code: str,
        template_name: str,
        callback_url: str | None = None,
        callback_apikey: str | None = None,
        flight: CallFlight | None = None,
    ) -> CallPlacement:
        """Ring each callee (national format) and read ``code`` with the named OTP template;
        ``flight`` says meanwhile whether the request is out unanswered."""
        body = self._campaign_body(
            callees, {"template_name": template_name, "code_otp": code}, callback_url, callback_apikey
        )
        sent = (code, *callees)
        data = await self._authorized("otp_call", "POST", f"{self._campaign_path}/otp", body, sent, flight)
        return self._placement("otp_call", data, sent)

    async def place_tts_call(
        self,
        callees: Sequence[str],
        *,
        template_name: str,
        params: Mapping[str, str],
        callback_url: str | None = None,
        callback_apikey: str | None = None,
    ) -> CallPlacement:
        """Ring each callee and read the named TTS template filled with ``params`` (its key fields)."""
        if "template_name" in params:
            raise ValueError("pass the template as template_name, not inside params")
        body = self._campaign_body(
            callees, {"template_name": template_name, **params}, callback_url, callback_apikey
        )
        sent = (*params.values(), *callees)
        data = await self._authorized("tts_call", "POST", f"{self._campaign_path}/voice", body, sent)
        return self._placement("tts_call", data, sent)

    async def import_template(self, name: str, content: str) -> TemplateImport:
        """Create a TTS template; ``{{key}}`` placeholders become its key fields."""
        body: dict[str, object] = {"name": name, "content": content}
        data = await self._authorized("template_import", "POST", f"{self._campaign_path}/voice/import", body)
        log.info("autocall.template.imported", template=name)
        return parse_template_import(name, data)

    async def get_report(self, call_id: str) -> CallReport:
        """The call's CDR; status None while it has not ended; CallReportNotFound if unknown."""
        data = await self._authorized("report", "GET", f"/api/v2/report/{quote(call_id, safe='')}", None)
        report = parse_report(data, requested_call_id=call_id)
        log.info("autocall.report.fetched", call_id=mask_call_id(call_id), status=report.provider_status)
        return report

    def _campaign_body(
        self,
        callees: Sequence[str],
        params: dict[str, str],
        callback_url: str | None,
        callback_apikey: str | None,
    ) -> dict[str, object]:
        if isinstance(callees, str):
            raise TypeError("callees is a sequence of phone numbers, not one string")
        if not callees:
            raise ValueError("at least one callee is required")
        body: dict[str, object] = {"caller": self._caller, "callees": list(callees), "params": params}
        if callback_url is not None:
            body["callback_url"] = callback_url
        if callback_apikey is not None:
            body["callback_apikey"] = callback_apikey
        return body

    def _placement(self, operation: Operation, data: dict[str, object], sent: Sequence[str]) -> CallPlacement:
        try:
            placement = parse_placement(data, default_campaign_id=self._campaign_id)
        except AutocallError as exc:
            raise self._failed(operation, exc) from None
        # A reason goes further than the log: into the verification's delivery, the API's answer and
        # the webhook payload, none of which may carry the code
        rejected = tuple(replace(r, reason=self._redact(r.reason, sent)) for r in placement.rejected)
        placement = replace(placement, rejected=rejected)
        log.info(
            "autocall.call.placed",
            operation=operation,
            campaign_id=placement.campaign_id,
            accepted=[mask_call_id(call_id) for call_id in placement.accepted],
            rejected=[(mask_phone(r.phone), r.reason) for r in placement.rejected],
        )
        return placement

    async def _request_token(self) -> AccessToken:
        obtained_at = self._monotonic()
        response = await self._send(
            "token", "POST", "/api/v1/users/generate_access_token", {"secret_key": self._secret_key}, None
        )
        if response.status_code in _REFUSED_KEY_STATUSES:
            raise self._failed(
                "token",
                ProviderAuthFailed(
                    f"the provider refused the secret key (HTTP {response.status_code}): "
                    + self._redact(error_message(response))
                ),
            )
        if 400 <= response.status_code < 500:
            # The token request is always the same well-formed body: another 4xx (a 404 from a wrong
            # OTP_AUTOCALL_URL path, a 405) says the endpoint is wrong, not that a request was refused.
            raise self._failed(
                "token",
                ProviderMalformedResponse(
                    f"the token endpoint answered HTTP {response.status_code}: "
                    + self._redact(error_message(response)),
                    status_code=response.status_code,
                    request_may_have_reached_provider=False,
                ),
            )
        data = self._data(response, "token")
        try:
            token = parse_token(data, obtained_at=obtained_at)
        except ProviderMalformedResponse as exc:
            raise self._failed("token", exc) from None
        log.info("autocall.token.obtained", lifetime_seconds=token.lifetime_seconds)
        return token

    async def _authorized(
        self,
        operation: Operation,
        method: str,
        path: str,
        body: dict[str, object] | None,
        sent: Sequence[str] = (),
        flight: CallFlight | None = None,
    ) -> dict[str, object]:
        """``sent``: what the request carries that must never reach a log (the code, the numbers),
        taken out of whatever the provider answers about it. ``flight``: kept saying whether the
        request is out without its answer (not while a token is fetched)."""
        flight = flight or CallFlight()
        token = await self._token_before_sending(self._tokens.get())
        flight.unanswered = True
        response = await self._send(operation, method, path, body, token)
        flight.unanswered = False
        if response.status_code == 401:
            log.info("autocall.token.rejected", operation=operation)
            token = await self._token_before_sending(self._tokens.replace(token))
            flight.unanswered = True
            response = await self._send(operation, method, path, body, token)
            flight.unanswered = False
            if response.status_code == 401:
                raise self._failed(
                    operation, ProviderAuthFailed("the provider refused a freshly issued token")
                )
        return self._data(response, operation, sent)

    async def _token_before_sending(self, obtaining: Awaitable[AccessToken]) -> AccessToken:
        """Await the token; its failures say the actual request was never sent."""
        try:
            return await obtaining
        except ProviderUnavailable as exc:
            raise ProviderUnavailable(
                f"no token: {exc}", request_may_have_reached_provider=False, status_code=exc.status_code
            ) from exc
        except ProviderMalformedResponse as exc:
            raise ProviderMalformedResponse(
                f"no token: {exc}", status_code=exc.status_code, request_may_have_reached_provider=False
            ) from exc

    async def _send(
        self,
        operation: Operation,
        method: str,
        path: str,
        body: dict[str, object] | None,
        token: AccessToken | None,
    ) -> httpx.Response:
        headers = {"Authorization": token.value} if token is not None else {}
        url = self._base_url + path
        try:
            return self._answered(await self._http.request(method, url, json=body, headers=headers))
        except httpx.ConnectError:
            log.info("autocall.request.retrying", operation=operation, host=self.host, reason="connect_error")
        except httpx.HTTPError as exc:
            raise self._failed(operation, _transport_failure(exc)) from exc
        await asyncio.sleep(CONNECT_RETRY_DELAY_SECONDS)
        try:
            return self._answered(await self._http.request(method, url, json=body, headers=headers))
        except httpx.HTTPError as exc:
            raise self._failed(operation, _transport_failure(exc)) from exc

    def _answered(self, response: httpx.Response) -> httpx.Response:
        """Note an answer below 500 as contact (5xx and refusals are noted by :meth:`_failed`)."""
        if response.status_code < 500:
            self.last_contact = (self.last_contact[0] + 1, None)
        return response

    def _data(
        self, response: httpx.Response, operation: Operation, sent: Sequence[str] = ()
    ) -> dict[str, object]:
        status = response.status_code
        if 200 <= status < 300 and operation == "template_import":
            return any_answer(response)
        if 200 <= status < 300:
            try:
                return response_data(response)
            except ProviderMalformedResponse as exc:
                raise self._failed(operation, exc) from None
        if 400 <= status < 500:
            message = self._redact(error_message(response), sent)
            rejected_type = (
                CallReportNotFound if status == 404 and operation == "report" else ProviderRejectedRequest
            )
            raise self._failed(operation, rejected_type(message, status_code=status))
        if status >= 500:
            unavailable = ProviderUnavailable(
                f"the provider answered HTTP {status}",
                request_may_have_reached_provider=True,
                status_code=status,
            )
            raise self._failed(operation, unavailable)
        raise self._failed(
            operation, ProviderMalformedResponse(f"unexpected HTTP {status} answer", status_code=status)
        )

    def _redact(self, text: str, sent: Sequence[str] = ()) -> str:
        """The provider's ``text`` without the secret key, the token, or what the request carried
        (``sent``): a provider repeating a parameter it refuses (``invalid code_otp 482913``) must
        not put the code in a log line or an error."""
        token = self._tokens.current
        for secret in (self._secret_key, token.value if token else ""):
            if secret:
                text = text.replace(secret, "***")
        for value in sorted((v for v in sent if v), key=len, reverse=True):
            text = text.replace(value, "[sent value]")
        return text

    def _failed(self, operation: Operation, error: AutocallError) -> AutocallError:
        metrics.PROVIDER_ERRORS.labels(operation, type(error).__name__).inc()
        self.last_contact = (self.last_contact[0] + 1, error)
        log.warning(
            "autocall.request.failed",
            operation=operation,
            host=self.host,
            error=type(error).__name__,
            detail=str(error),
            status_code=getattr(error, "status_code", None),
            may_have_reached_provider=getattr(error, "request_may_have_reached_provider", None),
        )
        return error


def _transport_failure(exc: httpx.HTTPError) -> AutocallError:
    """What an httpx failure means for the caller: above all, whether the request may have been acted on."""
    if isinstance(exc, httpx.DecodingError):
        return ProviderMalformedResponse(f"undecodable body: {exc}")
    # No connection, or none free: not one byte of the request left this process.
    sent = not isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol
    )
    what = "may have reached the provider" if sent else "was not sent"
    return ProviderUnavailable(
        f"{type(exc).__name__}: the request {what}", request_may_have_reached_provider=sent
    )
