"""Business counters for Prometheus (request metrics come from Litestar's Prometheus middleware).

In a multi-worker deployment each worker exposes its own counts; scrape every worker, or set
PROMETHEUS_MULTIPROC_DIR as prometheus_client documents.
"""

from __future__ import annotations

from prometheus_client import Counter

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
