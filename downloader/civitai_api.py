"""Asking CivitAI: a model version's files, and a signed storage URL aria2 can fetch with no header at all.

CivitAI's download endpoint answers a redirect to a presigned object-store URL (Backblaze B2, Cloudflare R2) that
refuses any request carrying an `Authorization` header, and aria2 sends its headers to every redirect hop. So the
redirect is resolved here, with the token, and aria2 gets the signed URL alone. The token only ever goes to the
configured endpoint (URLs are built from it, never taken from an answer), in a header: never in a URL, a message
or a returned value.

Blocking calls (http.client, no redirect followed, no proxy taken from the environment): run them in a worker
thread. Each call is one fresh connection; the endpoint and the token are arguments (config.py reads the
environment).
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from . import __version__
from .civitai import (
    DEFAULT_ENDPOINT,
    CivitaiFile,
    CivitaiLinkError,
    CivitaiRef,
    download_url,
    pick_file,
)
from .errors import SourceError
from .hosts import parse_retry_after

# Cloudflare in front of CivitAI refuses Python's default User-Agent; say who we are instead.
USER_AGENT = f"pod-downloader/{__version__}"
TIMEOUT = 30.0
MAX_JSON_BYTES = 8 * 1024 * 1024  # a model version's JSON is a few kB; never read an endless body
MAX_HOPS = 5  # redirects followed (without credentials) while probing the signed URL

NEEDS_TOKEN = "this model needs a CivitAI API token: set CIVITAI_TOKEN"


@dataclass(frozen=True)
class SignedUrl:
    """A presigned storage URL for one file: hand it to aria2 with no header. It expires (CivitAI does not say
    when; R2's were valid 24 h): a 403 from it means "resolve again" (`fresh_url`)."""

    url: str
    size: int | None  # from the storage's Content-Range: exact


@dataclass(frozen=True)
class CivitaiResolved:
    """A CivitAI source made concrete: the file and a signed URL for it."""

    file: CivitaiFile
    signed: SignedUrl

    @property
    def ref(self) -> CivitaiRef:
        """What to store as the download's source: the exact file, so a refresh fetches the same one."""
        return self.file.ref

    @property
    def size(self) -> int | None:
        """The exact size from the store, or None (then `file.size_estimate` is a hint for the disk check only)."""
        return self.signed.size


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def _request(method: str, url: str, headers: dict[str, str], timeout: float, limit: int = MAX_JSON_BYTES) -> _Answer:
    """One request, no redirect followed; reads at most `limit` body bytes (a file answered with 200 is not
    downloaded here)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(f"CivitAI gave an address that is not http(s): {parts.scheme}://{parts.hostname or ''}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, target, headers={"User-Agent": USER_AGENT, **headers})
        response = conn.getresponse()
        body = response.read(limit) if method != "HEAD" else b""
        return _Answer(response.status, response.headers, body)
    except (OSError, http.client.HTTPException) as e:
        where = f"{parts.scheme}://{parts.netloc}"
        raise SourceError(f"cannot reach {where}: {type(e).__name__}: {e}", retryable=True) from None
    finally:
        conn.close()


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _said(body: bytes) -> str:
    """CivitAI's own words from an error body ({"error": …} or {"message": …}), short; '' when none."""
    data = _json(body)
    if isinstance(data, dict):
        for key in ("error", "message"):
            if isinstance(data.get(key), str):
                return data[key][:200]
    return ""


def _error(answer: _Answer, what: str, token: str | None) -> SourceError:
    """A CivitAI refusal in words a user can act on."""
    status, said = answer.status, _said(answer.body)
    if status == 401:
        if token:
            return SourceError(f"CivitAI refused CIVITAI_TOKEN for {what} (401): check the token", status=401)
        return SourceError(f"{NEEDS_TOKEN} ({what}: CivitAI says 401)", status=401)
    if status == 403:
        data = _json(answer.body)
        if isinstance(data, dict) and str(data.get("error", "")).lower() == "early access":
            until = f" until {data['deadline']}" if isinstance(data.get("deadline"), str) else ""
            message = f"{what} is in early access{until}: only those who unlocked it can download it"
            return SourceError(f"{message} (CivitAI says 403)", status=403)
        hint = "" if token else f": {NEEDS_TOKEN}"
        return SourceError(f"CivitAI says 403 for {what}{hint}" + (f" ({said})" if said else ""), status=403)
    if status == 404:
        return SourceError(f"no such model version: {what} (CivitAI says 404)", status=404)
    if status == 429:
        retry = parse_retry_after(answer.headers.get("Retry-After"))
        message = f"CivitAI says 429 for {what}: too many requests"
        return SourceError(message, status=429, retryable=True, retry_after=retry)
    suffix = f" ({said})" if said else ""
    return SourceError(f"CivitAI says {status} for {what}{suffix}", status=status, retryable=status >= 500)


def fetch_version(version_id: int, *, endpoint: str = DEFAULT_ENDPOINT, token: str | None = None,
                  timeout: float = TIMEOUT) -> Any:
    """`GET /api/v1/model-versions/<id>`: the version's JSON (model, files, hashes). Raises SourceError."""
    what = f"model version {version_id}"
    answer = _request("GET", f"{endpoint.rstrip('/')}/api/v1/model-versions/{version_id}", _auth(token), timeout)
    if answer.status != 200:
        raise _error(answer, what, token)
    data = _json(answer.body)
    if not isinstance(data, dict):
        raise SourceError(f"CivitAI's answer for {what} is not a JSON object", retryable=True)
    return data


def _probe(url: str, timeout: float) -> tuple[int, int | None]:
    """GET the first byte of a signed URL with no credentials (a HEAD is refused there when it carries a token,
    and some stores refuse HEAD outright); follows redirects. (status, exact size or None)."""
    for _ in range(MAX_HOPS):
        answer = _request("GET", url, {"Range": "bytes=0-0"}, timeout, limit=0)
        if answer.status in (301, 302, 303, 307, 308) and answer.headers.get("Location"):
            url = urljoin(url, answer.headers["Location"])
            continue
        total = (answer.headers.get("Content-Range") or "").rpartition("/")[2]
        if answer.status == 206 and total.isdigit():
            return 206, int(total)
        length = answer.headers.get("Content-Length")
        return answer.status, int(length) if answer.status == 200 and length and length.isdigit() else None
    return 310, None  # too many redirects


def fresh_url(ref: CivitaiRef, *, endpoint: str = DEFAULT_ENDPOINT, token: str | None = None,
              timeout: float = TIMEOUT) -> SignedUrl:
    """A new signed storage URL for `ref` (pass `resolved.ref`, the exact file): the download endpoint is asked
    with the token, its redirect is not followed, and the target is probed without the token. Call it again
    whenever the signed URL answers 403 (expired). Raises SourceError."""
    what = f"model version {ref.version_id}" + (f" file {ref.file_id}" if ref.file_id is not None else "")
    answer = _request("GET", download_url(ref, endpoint), _auth(token), timeout)
    if answer.status in (301, 302, 303, 307, 308):
        location = answer.headers.get("Location")
        if not location:
            raise SourceError(f"CivitAI redirected {what} nowhere", retryable=True)
        signed = urljoin(download_url(ref, endpoint), location)
    elif answer.status in (200, 206):
        kind = (answer.headers.get("Content-Type") or "").lower()
        if "json" in kind or "html" in kind:
            # A page instead of a file: gated versions used to answer this way, and naive tools saved it as
            # the model.
            said = _said(answer.body) or "a page instead of the file"
            raise SourceError(f"CivitAI answered {what} with {said}: {NEEDS_TOKEN} if it needs one", status=401)
        if token:
            # Served directly, not redirected: fetching it would need the token, which must not go to aria2.
            raise SourceError(f"CivitAI served {what} without a signed URL; cannot fetch it without the token in aria2")
        signed = download_url(ref, endpoint)
    else:
        raise _error(answer, what, token)
    status, size = _probe(signed, timeout)
    if status not in (200, 206):
        raise SourceError(f"CivitAI's storage says {status} for {what}'s signed URL", status=status,
                          retryable=status >= 500 or status in (403, 429))
    return SignedUrl(url=signed, size=size)


def resolve(ref: CivitaiRef, *, endpoint: str = DEFAULT_ENDPOINT, token: str | None = None,
            timeout: float = TIMEOUT) -> CivitaiResolved:
    """The file `ref` names (API metadata: name, type, sha256) and a signed URL for it. Raises SourceError
    (unreachable, 401/403/404/429 in words) or SourceError from a CivitaiLinkError (no such file)."""
    version = fetch_version(ref.version_id, endpoint=endpoint, token=token, timeout=timeout)
    try:
        file = pick_file(version, ref)
    except CivitaiLinkError as e:
        raise SourceError(str(e), status=404) from None
    signed = fresh_url(file.ref, endpoint=endpoint, token=token, timeout=timeout)
    return CivitaiResolved(file=file, signed=signed)
