"""hf://, civitai: and http(s):// sources -> what to hand aria2: URL, size, expected sha256, headers.

Hub files go through huggingface_hub (so HF_ENDPOINT and tokens behave as users expect); aria2 gets the
hub's `/resolve/<commit>/` URL rather than the signed CDN one, so its own retries fetch a fresh signature.
CivitAI files are asked of CIVITAI_ENDPOINT's API (civitai_api.py): aria2 gets the signed storage URL and no
header at all, so the token never reaches it; an expired URL is resolved again (download_errors.py).
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

from . import civitai_api
from .civitai import default_dest
from .config import Settings
from .errors import SourceError
from .hosts import parse_retry_after
from .manifest import CivitaiSource, HfSource, ModelSpec, UrlSource

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
PROBE_CONCURRENCY = 8


@dataclass(frozen=True)
class Resolved:
    """A source made concrete for one download."""

    url: str
    size: int | None
    sha256: str | None
    sha256_origin: str | None  # "manifest", "hub", "civitai" or None: size-checked only ("unverified")
    commit: str | None = None
    headers: list[str] = field(default_factory=list, repr=False)  # may hold a token: never log or store
    dest: str | None = None  # a CivitAI download without a dest: where its file goes (its type's folder/its name)


def hf_endpoint(settings: Settings) -> str:
    """The hub endpoint in force (huggingface_hub reads HF_ENDPOINT once, at import)."""
    return settings.hf_endpoint.rstrip("/")


def _auth_header(token: str | None) -> list[str]:
    return [f"Authorization: Bearer {token}"] if token else []


def repo_page(repo_id: str, settings: Settings) -> str:
    """The hub page of a repository, where its licence is accepted: HF_ENDPOINT/owner/repo."""
    return f"{hf_endpoint(settings)}/{repo_id}"


def gated_message(repo_id: str, settings: Settings) -> str:
    """What a 403 from the hub (or its CDN) for a gated or unauthorised repository tells the user."""
    return f"gated: accept the licence at {repo_page(repo_id, settings)} and set HF_TOKEN"


def private_message(repo_id: str) -> str:
    """What a 401 / repository-not-found from the hub tells the user."""
    return f"private: set HF_TOKEN (the hub does not show {repo_id} without one; or check the repository name)"


def _retry_after(e: Exception) -> float | None:
    headers = getattr(getattr(e, "response", None), "headers", None)
    return parse_retry_after(headers.get("Retry-After")) if headers is not None else None


def _hub_error(spec: ModelSpec, src: HfSource, e: Exception, settings: Settings) -> SourceError:
    rev = spec.revision or "main"
    what = f"{src.repo_id}/{src.path}@{rev}"
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 429:
        return SourceError(
            f"hub says 429 for {what}: too many requests", status=429, retryable=True, retry_after=_retry_after(e)
        )
    if isinstance(e, GatedRepoError) or status == 403:
        return SourceError(f"{gated_message(src.repo_id, settings)} (hub says {status or 403})", status=status or 403)
    if isinstance(e, RepositoryNotFoundError) or status == 401:
        return SourceError(f"{private_message(src.repo_id)} (hub says {status or 401})", status=status or 401)
    if isinstance(e, RevisionNotFoundError):
        return SourceError(f"hub says 404: revision {rev!r} not found in {src.repo_id}", status=404)
    if isinstance(e, RemoteEntryNotFoundError):
        return SourceError(f"hub says 404: {src.path} not found in {src.repo_id} at {rev}", status=404)
    if isinstance(e, HfHubHTTPError) and status is not None and status < 500:
        return SourceError(f"hub says {status} for {what}", status=status)
    return SourceError(f"hub unreachable for {what}: {type(e).__name__}: {e}", status=status, retryable=True)


def _check_pins(spec: ModelSpec, size: int | None, sha: str | None, origin: str) -> None:
    """Refuse, before a byte is fetched, when the manifest's pins disagree with what the source says."""
    if spec.sha256 and sha and spec.sha256 != sha:
        raise SourceError(
            f"the manifest pins sha256 {spec.sha256} but {origin} says {sha}: the file changed upstream or "
            "the manifest is wrong (pin a `revision:` or update `sha256:`); nothing was downloaded"
        )
    check_size_pin(spec.size, size, origin)


def check_size_pin(pinned: int | None, size: int | None, origin: str) -> None:
    """Refuse when a size pinned in the manifest disagrees with what the source says (SourceError)."""
    if pinned and size and pinned != size:
        raise SourceError(
            f"the manifest says {pinned} bytes but {origin} says {size}: the file changed upstream or "
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
        raise _hub_error(spec, src, e, settings) from None
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


def resolve_civitai(spec: ModelSpec, src: CivitaiSource, settings: Settings) -> Resolved:
    """Ask CivitAI's API for the file (name, type, sha256) and a signed URL aria2 fetches with no header."""
    found = civitai_api.resolve(src.ref, endpoint=settings.civitai_endpoint, token=settings.civitai_token)
    what = f"CivitAI (model version {src.ref.version_id})"
    _check_pins(spec, found.size, found.file.sha256, what)
    dest = None
    if spec.dest is None:
        try:
            dest = default_dest(found.file)
        except ValueError as e:  # a type with no models folder, a file name that is not plain
            raise SourceError(str(e)) from None
    sha = spec.sha256 or found.file.sha256
    return Resolved(
        url=found.signed.url,
        size=spec.size or found.size,
        sha256=sha,
        sha256_origin="manifest" if spec.sha256 else ("civitai" if sha else None),
        headers=[],  # the signed URL refuses an Authorization header, and the token must not reach aria2
        dest=dest,
    )


def url_headers(url: str, settings: Settings) -> list[str]:
    """The token for the hub's own endpoint (a plain URL on it); no other host gets one."""
    host = (urlsplit(url).hostname or "").lower()
    if settings.hf_token and host == (urlsplit(hf_endpoint(settings)).hostname or "").lower():
        return _auth_header(settings.hf_token)
    return []


async def probe_url(session: aiohttp.ClientSession, spec: ModelSpec, src: UrlSource, settings: Settings) -> Resolved:
    """HEAD (or a 1-byte GET) the URL for its size; errors say what the server answered."""
    headers = dict(h.split(": ", 1) for h in url_headers(src.url, settings))
    size: int | None = None
    try:
        async with session.head(src.url, headers=headers, allow_redirects=True) as r:
            status, retry_after = r.status, r.headers.get("Retry-After")
            if r.status < 400:
                size = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
        if status in (405, 501) or (status < 400 and size is None):
            async with session.get(src.url, headers={**headers, "Range": "bytes=0-0"}, allow_redirects=True) as r:
                status, retry_after = r.status, r.headers.get("Retry-After")
                total = r.headers.get("Content-Range", "").rpartition("/")[2]
                size = int(total) if total.isdigit() else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        raise SourceError(f"cannot reach {src.url}: {type(e).__name__}: {e}", retryable=True) from None
    if status == 429:
        raise SourceError(
            f"server says 429 for {src.url}: too many requests",
            status=429,
            retryable=True,
            retry_after=parse_retry_after(retry_after),
        )
    if status in (401, 403):
        raise SourceError(f"server says {status} for {src.url}: it needs credentials this downloader does not send", status=status)
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
                    if isinstance(src, CivitaiSource):
                        return await asyncio.to_thread(resolve_civitai, spec, src, settings)
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
