"""Where each file a workflow needs would come from: its URL (only on the hub, CivitAI or an allowed host), else
a manifest model of that file name, else nowhere ("unknown"). Nothing is fetched here.

A workflow's URLs are untrusted: ComfyUI removed its own server-side download route after an SSRF report. A link
to huggingface.co or civitai.com is turned into the project's source (hf://… or civitai:…), which resolves through
HF_ENDPOINT / CIVITAI_ENDPOINT, never through the link's host; any other URL must be on an allowed origin (scheme,
host and port: another port of an allowed host is not allowed). File names and folders are confined as a
manifest's dest is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from .civitai import DEFAULT_ENDPOINT as CIVITAI_ENDPOINT
from .civitai import CivitaiLinkError, parse_civitai
from .comfy import MODEL_FOLDERS
from .hf_links import DEFAULT_ENDPOINT as HF_ENDPOINT
from .hf_links import HfLinkError, parse_hf_link
from .manifest import check_dest
from .origins import SECRET_QUERY_KEYS, Origin, origin_of, parse_allowed_hosts
from .workflows import Wanted, load_workflow, wanted_files

# What a needed file's `kind` says.
FROM_URL = "url"  # `source` (+ `revision`) downloads it
FROM_MANIFEST = "manifest"  # `model_id` is a manifest model with this file name
UNKNOWN = "unknown"  # the workflow says no usable URL and no manifest model has this name
NOT_ALLOWED = "not allowed"  # the workflow's URL is not on the hub, CivitAI or an allowed host: never fetched
INVALID = "invalid"  # the folder or the name would leave the models folder, or is not ComfyUI's


@dataclass(frozen=True)
class NeededFile:
    """One model file a workflow needs and where it would come from."""

    folder: str
    name: str
    kind: str  # FROM_URL, FROM_MANIFEST, UNKNOWN, NOT_ALLOWED or INVALID
    source: str | None = None  # FROM_URL: hf://owner/repo/path, civitai:<version>…, or the allowed URL itself
    revision: str | None = None  # for an hf:// source: the link's branch, tag or commit
    model_id: str | None = None  # a manifest model with this file name (whatever the kind)
    sha256: str | None = None  # the workflow's sha256 for it, if it gave one
    url: str | None = None  # the URL as the workflow gave it (shown only when it holds no secret)
    reason: str | None = None  # NOT_ALLOWED / INVALID: why
    nodes: tuple[str, ...] = ()

    @property
    def dest(self) -> str | None:
        """Where it goes in the models folder (`folder/name`); None when INVALID."""
        return None if self.kind == INVALID else f"{self.folder}/{self.name}"

    @property
    def where(self) -> str:
        """Where it would come from, in words: the source, "manifest model X", "unknown", "not allowed: <url>"."""
        if self.kind == FROM_URL:
            return self.source + (f" @ {self.revision}" if self.revision else "") if self.source else "?"
        if self.kind == FROM_MANIFEST:
            return f"manifest model {self.model_id}"
        if self.kind in (NOT_ALLOWED, INVALID):
            return f"{self.kind}: {self.reason}"
        return UNKNOWN


def _shown(url: str) -> str:
    """A URL as a message may show it: without its query and credentials when either could hold a secret."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        secret = parts.username or parts.password or any(k.lower() in SECRET_QUERY_KEYS for k, _ in query)
    except ValueError:
        return "(an unreadable URL)"
    if secret:
        return f"{parts.scheme}://{parts.hostname or ''}{parts.path} (credentials removed)"
    return url[:500]


def source_of_url(url: str, allowed: frozenset[Origin], *, hf_endpoint: str = HF_ENDPOINT,
                  civitai_endpoint: str = CIVITAI_ENDPOINT) -> tuple[str | None, str | None, str | None]:
    """(source, revision, None) for a usable URL; (None, None, why) for one that is not allowed."""
    try:
        link = parse_hf_link(url, hf_endpoint)
        if link is not None:
            return link.source, link.revision, None
        ref = parse_civitai(url, civitai_endpoint)
        if ref is not None:
            return str(ref), None, None
    except (HfLinkError, CivitaiLinkError) as e:
        return None, None, f"{_shown(url)} ({e})"
    origin = origin_of(url)
    if origin is None or origin not in allowed:
        return None, None, _shown(url)
    if _shown(url) != url[:500]:
        return None, None, f"{_shown(url)}: a token in a URL would be stored and logged"
    return url, None, None


def _confined(want: Wanted) -> str | None:
    """Why a wanted file's folder or name cannot be used; None when both are fine."""
    if want.folder not in MODEL_FOLDERS:
        return f"folder {want.folder!r} is not one of ComfyUI's model folders"
    try:
        check_dest(f"{want.folder}/{want.name}")
    except ValueError as e:
        return str(e)
    if "\x00" in want.name or any(ord(c) < 32 for c in want.name):
        return f"name {want.name!r} holds control characters"
    return None


def classify(want: Wanted, *, manifest_names: Mapping[str, str], allowed: frozenset[Origin],
             hf_endpoint: str = HF_ENDPOINT, civitai_endpoint: str = CIVITAI_ENDPOINT) -> NeededFile:
    """Where one wanted file would come from: a usable URL, else a manifest model, else not allowed / unknown."""

    def needed(kind: str, **found: str | None) -> NeededFile:
        return NeededFile(want.folder, want.name, kind, sha256=want.sha256, url=want.url, nodes=want.nodes, **found)

    problem = _confined(want)
    if problem is not None:
        return needed(INVALID, reason=problem)
    model_id = manifest_names.get(want.name.rsplit("/", 1)[-1])
    why = None
    if want.url is not None:
        source, revision, why = source_of_url(
            want.url, allowed, hf_endpoint=hf_endpoint, civitai_endpoint=civitai_endpoint
        )
        if source is not None:
            return needed(FROM_URL, source=source, revision=revision, model_id=model_id)
    if model_id is not None:
        return needed(FROM_MANIFEST, model_id=model_id)
    if why is not None:
        return needed(NOT_ALLOWED, reason=why)
    return needed(UNKNOWN)


def needed_files(data: bytes | str, *, manifest_names: Mapping[str, str] | None = None,
                 allowed_hosts: Iterable[str] = (), hf_endpoint: str = HF_ENDPOINT,
                 civitai_endpoint: str = CIVITAI_ENDPOINT, allowed: frozenset[Origin] | None = None) -> list[NeededFile]:
    """What a workflow (its JSON text, UI or API format) needs and where each file would come from.
    `manifest_names`: file name -> manifest model id; `allowed_hosts`: see parse_allowed_hosts, or `allowed`: the
    origins already parsed (Settings.allowed_hosts), which replace it. Raises WorkflowError for a workflow that
    cannot be read, ValueError for a bad allow-list entry."""
    allowed = parse_allowed_hosts(allowed_hosts) if allowed is None else allowed
    names = manifest_names or {}
    return [
        classify(w, manifest_names=names, allowed=allowed, hf_endpoint=hf_endpoint, civitai_endpoint=civitai_endpoint)
        for w in wanted_files(load_workflow(data))
    ]
