"""hf:// and http(s):// sources -> what to hand aria2: URL, size, expected sha256, headers.

Hub files go through huggingface_hub (so HF_ENDPOINT and tokens behave as users expect); aria2 gets the
hub's `/resolve/<commit>/` URL rather than the signed CDN one, so its own retries fetch a fresh signature.
Direct URLs are probed concurrently with aiohttp (size, range support) before anything downloads.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .config import Settings
from .errors import SourceError
from .manifest import HfSource, ModelSpec, UrlSource

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
PROBE_CONCURRENCY = 8


@dataclass(frozen=True)
class Resolved:
    """A source made concrete for one download."""

    url: str
    size: int | None
    sha256: str | None
    sha256_origin: str | None  # "manifest", "hub" or None: size-checked only ("unverified")
    commit: str | None = None
    headers: list[str] = field(default_factory=list, repr=False)  # may hold a token: never log or store


def hf_endpoint(settings: Settings) -> str:
    """The hub endpoint in force (huggingface_hub reads HF_ENDPOINT once, at import)."""
    return settings.hf_endpoint.rstrip("/")


def _auth_header(token: str | None) -> list[str]:
    return [f"Authorization: Bearer {token}"] if token else []


def _hub_error(spec: ModelSpec, src: HfSource, e: Exception) -> SourceError:
    rev = spec.revision or "main"
    what = f"{src.repo_id}/{src.path}@{rev}"
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, GatedRepoError):
        return SourceError(
            f"hub says {status or 403}: {src.repo_id} is gated: accept its license on the hub and set HF_TOKEN",
            status=status,
        )
    if isinstance(e, RepositoryNotFoundError) or status == 401:
        return SourceError(
            f"hub says {status or 401}: repository {src.repo_id} not found or private: check the name or set HF_TOKEN",
            status=status,
        )
    if isinstance(e, RevisionNotFoundError):
        return SourceError(f"hub says 404: revision {rev!r} not found in {src.repo_id}", status=404)
    if isinstance(e, RemoteEntryNotFoundError):
        return SourceError(f"hub says 404: {src.path} not found in {src.repo_id} at {rev}", status=404)
    if status == 403:
        return SourceError(f"hub says 403 for {what}: HF_TOKEN lacks access to this repository", status=403)
    if isinstance(e, HfHubHTTPError) and status is not None and status < 500 and status != 429:
        return SourceError(f"hub says {status} for {what}", status=status)
    return SourceError(f"hub unreachable for {what}: {type(e).__name__}: {e}", status=status, retryable=True)


def _check_pins(spec: ModelSpec, size: int | None, sha: str | None, origin: str) -> None:
    """Refuse, before a byte is fetched, when the manifest's pins disagree with what the source says."""
    if spec.sha256 and sha and spec.sha256 != sha:
        raise SourceError(
            f"the manifest pins sha256 {spec.sha256} but {origin} says {sha}: the file changed upstream or "
            "the manifest is wrong (pin a `revision:` or update `sha256:`); nothing was downloaded"
        )
    if spec.size and size and spec.size != size:
        raise SourceError(
            f"the manifest says {spec.size} bytes but {origin} says {size}: the file changed upstream or "
            "the manifest is wrong; nothing was downloaded"
        )


def resolve_hf(spec: ModelSpec, src: HfSource, settings: Settings) -> Resolved:
    """Ask the hub (HEAD /resolve/) for commit, size and LFS sha256; no redirect is followed."""
    endpoint = hf_endpoint(settings)
    revision = spec.revision or "main"
    url = hf_hub_url(src.repo_id, src.path, revision=revision, endpoint=endpoint)
    try:
        # No retries here: a retryable failure is retried by the Manager, with its own backoff and progress.
        meta = get_hf_file_metadata(url, token=settings.hf_token or False, endpoint=endpoint)
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one clear SourceError
        raise _hub_error(spec, src, e) from None
    etag = (meta.etag or "").lower()
    hub_sha = etag if SHA256_RE.match(etag) else None  # LFS files: the etag is the sha256
    _check_pins(spec, meta.size, hub_sha, f"the hub ({src.repo_id} at {meta.commit_hash or revision})")
    sha = spec.sha256 or hub_sha
    # Pin the commit so a push upstream mid-download cannot mix two versions of the file.
    pinned = hf_hub_url(src.repo_id, src.path, revision=meta.commit_hash or revision, endpoint=endpoint)
    return Resolved(
        url=pinned,
        size=spec.size or meta.size,
        sha256=sha,
        sha256_origin="manifest" if spec.sha256 else ("hub" if hub_sha else None),
        commit=meta.commit_hash,
        headers=_auth_header(settings.hf_token),
    )


def url_headers(url: str, settings: Settings) -> list[str]:
    """Tokens for hosts that take them (CivitAI, the hub's own endpoint)."""
    host = (urlsplit(url).hostname or "").lower()
    if settings.civitai_token and (host == "civitai.com" or host.endswith(".civitai.com")):
        return _auth_header(settings.civitai_token)
    if settings.hf_token and host == (urlsplit(hf_endpoint(settings)).hostname or "").lower():
        return _auth_header(settings.hf_token)
    return []


async def probe_url(session: aiohttp.ClientSession, spec: ModelSpec, src: UrlSource, settings: Settings) -> Resolved:
    """HEAD (or a 1-byte GET) the URL for its size; errors say what the server answered."""
    headers = dict(h.split(": ", 1) for h in url_headers(src.url, settings))
    size: int | None = None
    try:
        async with session.head(src.url, headers=headers, allow_redirects=True) as r:
            status = r.status
            if r.status < 400:
                size = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
        if status in (405, 501) or (status < 400 and size is None):
            async with session.get(src.url, headers={**headers, "Range": "bytes=0-0"}, allow_redirects=True) as r:
                status = r.status
                total = r.headers.get("Content-Range", "").rpartition("/")[2]
                size = int(total) if total.isdigit() else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        raise SourceError(f"cannot reach {src.url}: {type(e).__name__}: {e}", retryable=True) from None
    if status in (401, 403):
        raise SourceError(f"server says {status} for {src.url}: set CIVITAI_TOKEN / HF_TOKEN if it needs a token", status=status)
    if status == 404:
        raise SourceError(f"server says 404: {src.url} not found", status=404)
    if status >= 400:
        raise SourceError(f"server says {status} for {src.url}", status=status, retryable=status >= 500 or status == 429)
    _check_pins(spec, size, None, "the server")
    return Resolved(
        url=src.url,
        size=spec.size or size,
        sha256=spec.sha256,
        sha256_origin="manifest" if spec.sha256 else None,
        headers=url_headers(src.url, settings),
    )


async def _resolve_many(specs: Sequence[ModelSpec], settings: Settings) -> list[Resolved | SourceError]:
    sem = asyncio.Semaphore(PROBE_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60, connect=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(spec: ModelSpec) -> Resolved | SourceError:
            src = spec.parsed_source
            async with sem:
                try:
                    if isinstance(src, HfSource):
                        return await asyncio.to_thread(resolve_hf, spec, src, settings)
                    return await probe_url(session, spec, src, settings)
                except SourceError as e:
                    return e

        return list(await asyncio.gather(*(one(s) for s in specs)))


def resolve_all(specs: Sequence[ModelSpec], settings: Settings) -> list[Resolved | SourceError]:
    """Resolve every spec concurrently; each result is a Resolved or the SourceError that explains it."""
    if not specs:
        return []
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_resolve_many(specs, settings))
    # Called from a thread that already runs an event loop (an async caller, a browser driver in tests):
    # asyncio.run() would refuse, so resolve on a worker thread with a loop of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _resolve_many(specs, settings)).result()
