"""A URL's origin (scheme, host, port with the scheme's default filled in): how a link is matched to the hub,
CivitAI, the configured endpoints and allow-lists, so `https://x` and `https://x:443` are one place."""

from __future__ import annotations

from urllib.parse import urlsplit

Origin = tuple[str, str, int]  # (scheme, host, port)
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> Origin | None:
    """A URL's (scheme, host, port), lower-cased, default port filled in; None for anything but http(s) with a
    host, or a URL that cannot be read (a bad port, a broken IPv6 literal)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def on_hosts(url: str, hosts: frozenset[str], endpoint: str) -> bool:
    """Whether `url` is on one of `hosts` (http or https, default port) or on `endpoint`'s exact origin."""
    origin = origin_of(url)
    if origin is None:
        return False
    scheme, host, port = origin
    if host in hosts and port == DEFAULT_PORTS[scheme]:
        return True
    return origin == origin_of(endpoint)
