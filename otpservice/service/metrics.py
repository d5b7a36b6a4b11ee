"""Counters for Prometheus (request metrics are recorded by :mod:`otpservice.http.observe`).

Under ``serve --workers N`` these live in prometheus_client's multiprocess files (set up by
``serve``), and /metrics answers the totals of every worker.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Tenants are labelled by name (never by key); their number is bounded by the tenants file.
VERIFICATIONS_STARTED = Counter("otp_verifications_started", "Verifications created", ["tenant"])
CODE_CHECKS = Counter(
    "otp_code_checks", "Codes submitted and evaluated, by tenant and outcome", ["tenant", "outcome"]
)
CALLS = Counter("otp_calls", "Call placements, by outcome", ["outcome"])
CALL_OUTCOMES = Counter(
    "otp_call_outcomes", "Final call statuses learned, by status and source", ["status", "source"]
)
BUDGET_REFUSALS = Counter(
    "otp_budget_refusals", "Calls refused by a budget before dialling, by budget", ["budget"]
)
CALLBACKS = Counter("otp_callbacks", "Provider callbacks received, by outcome", ["outcome"])
EXPIRED = Counter("otp_verifications_expired", "Pending verifications stored as expired by the sweep")
WEBHOOK_EVENTS = Counter(
    "otp_webhook_events",
    "Webhook events by outcome: emitted (first attempt), delivered, retried, dead_lettered",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "otp_webhook_delivery_seconds",
    "From an event's recording to its receiver's 2xx answer",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
HTTP_REFUSED = Counter(
    "otp_http_refused", "Requests refused by the server before they reached the app, by code", ["code"]
)
PROVIDER_ERRORS = Counter(
    "otp_provider_errors",
    "Requests to the voice provider that failed, by operation (token, otp_call, report, ...) and error",
    ["operation", "error"],
)
CHECKS_SHED = Counter(
    "otp_checks_shed", "Checks refused 503 overloaded before the app read them (hashing full)"
)
RECORDS_LOST = Counter(
    "otp_records_lost",
    "Writes that found their verification gone (storage lost its latest writes): a background "
    "repair's, or the placement of a call its request records",
    ["write"],
)
