"""Hosts that asked us to slow down (429 Too Many Requests): no request goes to such a host before the time its
Retry-After named has passed; files from other hosts go on meanwhile.

A wait for a rate limit is not a failed attempt: the file is queued again with the wait in words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from .config import Settings
from .state import utcnow

# aria2 reports a 429 without the server's Retry-After (neither over RPC nor in its log): wait this long then.
UNKNOWN_RETRY_AFTER = 30.0
MAX_RETRY_AFTER = 3600.0  # a server asking for more is waited for this long, then asked again


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return min(max(when.timestamp() - now(), 0.0), MAX_RETRY_AFTER)


def host_of(source: str, settings: Settings) -> str:
    """The host (with its port, if any) a download's requests go to first: the hub for hf:// sources, CivitAI's
    endpoint for civitai: ones, else the URL's host."""
    if source.startswith("hf://"):
        source = settings.hf_endpoint
    elif source.startswith("civitai:"):
        source = settings.civitai_endpoint
    parts = urlsplit(source)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


def who(host: str, settings: Settings) -> str:
    """How messages name a host: "the hub" for the hub's endpoint, "CivitAI" for its endpoint, else the host name."""
    if host == host_of("hf://", settings):
        return "the hub"
    return "CivitAI" if host == host_of("civitai:", settings) else host


class HostGate:
    """When each rate-limited host may be asked again (monotonic clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def hold(self, host: str, seconds: float) -> None:
        """No request to `host` for `seconds` (a later hold never shortens an earlier one)."""
        until = self._clock() + seconds
        self._until[host] = max(until, self._until.get(host, 0.0))

    def held(self, host: str) -> bool:
        """Whether `host` asked us to wait and the wait is not over."""
        until = self._until.get(host)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[host]
            return False
        return True


def rate_limit_message(name: str, seconds: float) -> str:
    """What the row says while it waits: "rate-limited by the hub, retrying in 30 s"."""
    return f"rate-limited by {name}, retrying in {max(seconds, 1):.0f} s"


def utc_in(seconds: float) -> datetime:
    """The naive UTC time `seconds` from now (the database's next_attempt_at)."""
    return utcnow() + timedelta(seconds=seconds)
