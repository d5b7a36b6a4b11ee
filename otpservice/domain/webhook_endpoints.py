"""Where a tenant's events go: the rules an operator's webhook URL and secret must meet."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's public prefix, not a secret
MIN_SECRET_BYTES = 24
MIN_DISTINCT_BYTES = 8


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive events, or None: https, or http on a loopback host only."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - read for its check: a port beyond 65535 or not a number raises
    except ValueError:
        return "must be an http(s) URL with a host and, if any, a port number"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must be https:// (http:// only on a loopback host)"
    if parts.username or parts.password:
        return "must not carry credentials (events are signed with the webhook secret)"
    return None


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not a Standard Webhooks secret (``whsec_`` and base64 of 24+ bytes), or None."""
    if not secret.startswith(SECRET_PREFIX):
        return f"must have the Standard Webhooks form {SECRET_PREFIX}<base64>"
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return f"must be {SECRET_PREFIX} followed by base64"
    if len(raw) < MIN_SECRET_BYTES:
        return f"must hold at least {MIN_SECRET_BYTES} random bytes"
    if len(set(raw)) < MIN_DISTINCT_BYTES:  # whsec_AAAA...: 24 zero bytes are no secret
        return f"must hold random bytes (this one has only {len(set(raw))} different values)"
    return None


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): plain http to it never leaves the host."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
