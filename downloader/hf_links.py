"""Hugging Face links as people paste them -> the project's `hf://owner/repo/path` plus a revision, so they resolve
through HF_ENDPOINT with the hub's sha256 exactly as hf:// sources do.

Accepted: `https://huggingface.co/<owner>/<repo>/blob/<rev>/<path>` (the file's page), `…/resolve/<rev>/<path>`
(the file itself, with or without `?download=true`) and `…/raw/<rev>/<path>`, on huggingface.co, hf.co or the
configured endpoint's exact origin (scheme, host and port). A revision with a slash (`refs/pr/1`) is
percent-encoded in such links (`refs%2Fpr%2F1`), as the hub writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from .origins import SECRET_QUERY_KEYS, on_hosts

DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
FILE_VIEWS = frozenset({"blob", "resolve", "raw"})
NOT_MODEL_REPOS = {"datasets": "a dataset", "spaces": "a Space", "buckets": "a storage bucket"}
# Hub pages that are not repositories (the first path segment of their URLs).
HUB_PAGES = frozenset({"docs", "api", "models", "collections", "papers", "settings", "organizations", "blog", "posts"})


class HfLinkError(ValueError):
    """A link to the hub that names no file of a model repository; the message says what to paste instead."""


@dataclass(frozen=True)
class HfLink:
    """A file of a model repository at a revision (a branch, tag or commit)."""

    repo_id: str  # owner/repo
    path: str  # the file's path in the repository
    revision: str

    @property
    def source(self) -> str:
        """The manifest's form of it: `hf://owner/repo/path` (the revision goes in `revision:`)."""
        return f"hf://{self.repo_id}/{self.path}"


def is_hub_url(text: str, endpoint: str = DEFAULT_ENDPOINT) -> bool:
    """Whether a URL points at the hub: huggingface.co / hf.co, or the configured endpoint's exact origin."""
    return on_hosts(text, HUB_HOSTS, endpoint)


def _prefix_len(endpoint: str) -> int:
    """How many leading path segments the endpoint itself has (a mirror may live under a path, e.g. /hf)."""
    return len([s for s in urlsplit(endpoint).path.split("/") if s])


def parse_hf_link(text: str, endpoint: str = DEFAULT_ENDPOINT) -> HfLink | None:
    """The file a pasted hub link names; None for a URL that is not on the hub; HfLinkError for a hub link
    that names no file of a model repository (a dataset, a Space, a repository or folder page, a bad path)."""
    text = text.strip()
    if not is_hub_url(text, endpoint):
        return None
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise HfLinkError("credentials in a URL would be stored and logged: set HF_TOKEN instead")
    if any(k.lower() in SECRET_QUERY_KEYS for k, _ in parse_qsl(parts.query)):
        raise HfLinkError("a token in the link's query would be stored and logged: set HF_TOKEN instead")
    raw = [s for s in parts.path.split("/") if s]
    host = (parts.hostname or "").lower()
    if host not in HUB_HOSTS:
        raw = raw[_prefix_len(endpoint) :]
    segments = [unquote(s) for s in raw]
    if segments and segments[0] in NOT_MODEL_REPOS:
        raise HfLinkError(f"this link is to {NOT_MODEL_REPOS[segments[0]]}, not a model: only model files download")
    if not segments or segments[0] in HUB_PAGES:
        raise HfLinkError("this hub link names no repository: paste the link of a file (…/resolve/<rev>/<path>)")
    if len(segments) < 2 or segments[1] in FILE_VIEWS:
        raise HfLinkError(
            "this link names a repository without its owner: paste the link of the file on the repository's own "
            "page (huggingface.co/<owner>/<repo>/resolve/<rev>/<path>)"
        )
    repo_id = "/".join(segments[:2])
    if len(segments) < 5 or segments[2] not in FILE_VIEWS:
        raise HfLinkError(
            f"this link is a page of {repo_id}, not one file: open the file and copy its link "
            "(…/blob/<rev>/<path> or …/resolve/<rev>/<path>)"
        )
    revision, path = segments[3], segments[4:]
    if not revision.strip() or any(c in revision for c in " \t\n?#"):
        raise HfLinkError(f"{revision!r} is not a branch, tag or commit")
    if any(p in (".", "..") or "/" in p or "\x00" in p for p in [*segments[:2], *path]):
        raise HfLinkError("the repository and file path in the link must not contain '.', '..' or encoded slashes")
    return HfLink(repo_id=repo_id, path="/".join(path), revision=revision)
