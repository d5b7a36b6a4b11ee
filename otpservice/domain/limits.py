"""Sliding-window limits, written as ``COUNT/WINDOW`` lists: ``3/10m,10/24h`` or ``2/10s``.

A limit allows ``count`` events in any span of ``window`` (sliding, so no double allowance across
a window's edge). A list allows an event only when every limit in it does. ``off`` is no limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.ASCII)
_LONGEST_WINDOW_SECONDS = 31 * 86400


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` events in any ``window_ms`` milliseconds."""

    count: int
    window_ms: int

    def __str__(self) -> str:
        seconds = self.window_ms / 1000
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size and seconds % size == 0:
                return f"{self.count}/{seconds // size:.0f}{unit}"
        return f"{self.count}/{seconds:.3f}".rstrip("0").rstrip(".") + "s"


Limits = tuple[Limit, ...]


def parse_limits(text: str) -> Limits:
    """Read ``COUNT/WINDOW[,COUNT/WINDOW...]``; raises ValueError saying what is wrong."""
    if text.strip().lower() == "off":
        return ()
    limits = []
    for part in text.split(","):
        match = _LIMIT.match(part)
        if match is None:
            raise ValueError(
                f"{part.strip()!r} is not COUNT/WINDOW (a whole count, a window with a unit s, m, h or d, "
                "e.g. 3/10m)"
            )
        count, amount, unit = int(match[1]), float(match[2]), match[3]
        seconds = amount * _UNIT_SECONDS[unit]
        window_ms = round(seconds * 1000)
        if count < 1 or seconds < 1 or window_ms > _LONGEST_WINDOW_SECONDS * 1000:
            raise ValueError(f"{part.strip()!r} needs a count of at least 1 and a window from 1s to 31d")
        limits.append(Limit(count, window_ms))
    return tuple(limits)


def describe(limits: Limits) -> str:
    return ",".join(str(limit) for limit in limits) or "off"


def flatten(limits: Limits) -> list[int]:
    """``count, window_ms, ...``: how the storage scripts take a list of limits."""
    return [value for limit in limits for value in (limit.count, limit.window_ms)]


def longest_window_ms(limits: Limits) -> int:
    return max((limit.window_ms for limit in limits), default=1000)
