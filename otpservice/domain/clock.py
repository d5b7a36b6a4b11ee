"""The clock seam: all "now" in the service comes from one injected object."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def to_iso(moment: datetime) -> str:
    """A UTC time as the answers, events and logs write it: ISO 8601 ending in "Z"."""
    return moment.isoformat().replace("+00:00", "Z")


def from_millis(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)
