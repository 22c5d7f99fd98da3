"""A URL's origin (scheme, host, port with the scheme's default filled in): how a link is matched to the hub,
CivitAI, the configured endpoints and allow-lists, so `https://x` and `https://x:443` are one place."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

Origin = tuple[str, str, int]  # (scheme, host, port)
DEFAULT_PORTS = {"http": 80, "https": 443}
# Query keys that carry credentials: secrets belong in HF_TOKEN / CIVITAI_TOKEN, never in a URL we store and log.
SECRET_QUERY_KEYS = frozenset({"token", "access_token", "api_key", "apikey", "key", "signature", "sig"})


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


def parse_allowed_hosts(entries: Iterable[str]) -> frozenset[Origin]:
    """Allow-list entries -> origins. `host` means https on 443, `host:port` https on that port; write
    `http://host:port` to allow plain HTTP (a local file server). ValueError for an entry that is not one."""
    origins: set[Origin] = set()
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        text = entry if "://" in entry else f"https://{entry}"
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise ValueError(f"allowed host {entry!r} is not host, host:port or http(s)://host:port") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"allowed host {entry!r} is not host, host:port or http(s)://host:port")
        if parts.username or parts.password:
            raise ValueError("an allowed host must not carry credentials (user:password@)")
        origins.add((scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]))
    return frozenset(origins)
