"""CivitAI sources: every form people paste -> one `CivitaiRef`; the API's answer -> the file to fetch and where
ComfyUI wants it. Pure: no network here (civitai_api.py asks CivitAI).

Accepted forms (model ids and version ids are separate numeric spaces, so a bare number is refused):
- `civitai:<versionId>`, `civitai:<versionId>+<fileId>`, `civitai:<versionId>?type=Model&format=SafeTensor`
  (the canonical forms: `str(ref)` gives one of them back);
- `https://civitai.com/models/<modelId>[/<slug>]?modelVersionId=<versionId>`;
- `https://civitai.com/api/download/models/<versionId>[?fileId=<id>|type=&format=&size=&fp=]`;
- `https://civitai.com/api/v1/model-versions/<versionId>`;
- AIR: `urn:air:<ecosystem>:<type>:civitai:<modelId>@<versionId>[+<fileId>][.<format>]`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .comfy import MODEL_FOLDERS
from .origins import SECRET_QUERY_KEYS, on_hosts

DEFAULT_ENDPOINT = "https://civitai.com"
# Hosts that serve CivitAI's pages and API (the same API runs on its sister sites); links to them are CivitAI links
# and resolve through the configured endpoint.
CIVITAI_HOSTS = frozenset({"civitai.com", "www.civitai.com", "civitai.green", "civitai.red"})
# The download endpoint's file selectors besides fileId; the server picks the primary file without them.
PREFERENCE_KEYS = ("type", "format", "size", "fp")

# CivitAI's model type (lower-cased) -> the ComfyUI models folder its files go to. Types without a folder
# (Hypernetwork, MotionModule, Poses, Wildcards, Workflows, Other, …) need a dest from the user.
TYPE_FOLDERS: dict[str, str] = {
    "checkpoint": "checkpoints",
    "lora": "loras",
    "locon": "loras",
    "dora": "loras",
    "lycoris": "loras",
    "textualinversion": "embeddings",
    "vae": "vae",
    "controlnet": "controlnet",
    "upscaler": "upscale_models",
    "diffusionmodel": "diffusion_models",  # AIR's type for checkpoints whose file is a bare diffusion model
}
# A file's own type says more than its model's: a checkpoint version can carry its VAE or text encoder.
FILE_TYPE_FOLDERS: dict[str, str] = {
    "vae": "vae",
    "text encoder": "text_encoders",
    "diffusion model": "diffusion_models",
}
NOT_MODEL_FILE_TYPES = frozenset({"training data", "config", "archive"})

_REF_RE = re.compile(r"^civitai:(\d{1,12})(?:\+(\d{1,12}))?(?:\?(.*))?$")
_AIR_RE = re.compile(
    r"^urn:air:(?P<eco>[a-z0-9_.-]+):(?P<type>[a-z0-9_.-]+):(?P<source>[a-z0-9_.-]+):(?P<id>[^@+.:]+)"
    r"(?:@(?P<version>[^+.]+))?(?:\+(?P<file>[^.]+))?(?:\.(?P<format>[a-z0-9]+))?$",
    re.IGNORECASE,
)


class CivitaiLinkError(ValueError):
    """Text that is meant as a CivitAI source but names no model version; the message says what to write."""


@dataclass(frozen=True)
class CivitaiRef:
    """One model version on CivitAI and, optionally, one file of it (else its primary file, or the file the
    preferences select)."""

    version_id: int
    file_id: int | None = None
    prefs: tuple[tuple[str, str], ...] = ()  # (key, value) of PREFERENCE_KEYS, in that order

    def __str__(self) -> str:
        if self.file_id is not None:
            return f"civitai:{self.version_id}+{self.file_id}"
        query = f"?{urlencode(self.prefs)}" if self.prefs else ""
        return f"civitai:{self.version_id}{query}"

    def pinned(self, file_id: int) -> CivitaiRef:
        """The same version with one exact file: what to store once resolved, so a later resolution (a refresh
        after the signed URL expired) fetches the very same file."""
        return CivitaiRef(self.version_id, file_id)


@dataclass(frozen=True)
class CivitaiFile:
    """One file of a model version, as CivitAI's API describes it."""

    version_id: int
    file_id: int
    model_id: int | None
    model_name: str
    version_name: str
    model_type: str  # "Checkpoint", "LORA", … (the model's)
    file_type: str  # "Model", "Pruned Model", "VAE", … (the file's)
    name: str  # the API's file name: untrusted, see safe_file_name()
    sha256: str | None  # lower-case hex; None when CivitAI has none (the file is then checked by structure only)
    size_estimate: int | None  # from sizeKB (a float): a hint for the disk check, never a pin
    air_type: str | None = None  # the type in the version's AIR (`diffusionmodel`, …), when it has one

    @property
    def ref(self) -> CivitaiRef:
        """The exact reference of this file (`civitai:<versionId>+<fileId>`)."""
        return CivitaiRef(self.version_id, self.file_id)


def is_civitai_url(text: str, endpoint: str = DEFAULT_ENDPOINT) -> bool:
    """Whether a URL points at CivitAI (one of its hosts, or the configured endpoint's exact origin)."""
    return on_hosts(text, CIVITAI_HOSTS, endpoint)


def _int(text: str | None, what: str) -> int:
    if text is None or not text.isdigit() or len(text) > 12 or int(text) == 0:
        raise CivitaiLinkError(f"{what} must be a positive number, not {text!r}")
    return int(text)


def _prefs(query: str, source: str) -> tuple[int | None, tuple[tuple[str, str], ...]]:
    """fileId and the file preferences of a download URL's (or a civitai: ref's) query."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in SECRET_QUERY_KEYS for k, _ in pairs):
        raise CivitaiLinkError(f"a token in the {source}'s query would be stored and logged: set CIVITAI_TOKEN instead")
    values = {k: v for k, v in pairs}
    file_id = _int(values["fileId"], "fileId") if "fileId" in values else None
    prefs = tuple((k, values[k]) for k in PREFERENCE_KEYS if values.get(k))
    return file_id, prefs


def parse_civitai(text: str, endpoint: str = DEFAULT_ENDPOINT) -> CivitaiRef | None:
    """The CivitaiRef a text names; None when it is not a CivitAI source at all (another URL, hf://); raises
    CivitaiLinkError when it is meant for CivitAI but names no model version (the message says what to add)."""
    text = text.strip()
    lowered = text.lower()
    if lowered.startswith("civitai:"):
        match = _REF_RE.match(text)
        if not match:
            raise CivitaiLinkError(
                "CivitAI sources look like civitai:<modelVersionId> (optionally +<fileId>): "
                "the version id is the modelVersionId in the model page's link"
            )
        version, file_id = _int(match[1], "the model version id"), match[2]
        query_file, prefs = _prefs(match[3] or "", "source")
        chosen = _int(file_id, "the file id") if file_id else query_file
        return CivitaiRef(version, chosen, () if chosen is not None else prefs)
    if lowered.startswith("urn:air:"):
        return _parse_air(text)
    if not is_civitai_url(text, endpoint):
        return None
    return _parse_url(text)


def _parse_air(text: str) -> CivitaiRef | None:
    match = _AIR_RE.match(text)
    if not match:
        raise CivitaiLinkError(
            "an AIR looks like urn:air:<ecosystem>:<type>:civitai:<modelId>@<versionId>[+<fileId>]"
        )
    if match["source"].lower() != "civitai":
        return None  # an AIR of another source (huggingface, …): not ours to read
    _int(match["id"], "the AIR's model id")
    if match["version"] is None:
        raise CivitaiLinkError(
            f"this AIR names CivitAI model {match['id']}, not one of its versions: add @<versionId> "
            f"(urn:air:…:civitai:{match['id']}@<versionId>)"
        )
    version = _int(match["version"], "the AIR's version id")
    file_id = _int(match["file"], "the AIR's file id") if match["file"] is not None else None
    return CivitaiRef(version, file_id)


def _parse_url(text: str) -> CivitaiRef:
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise CivitaiLinkError("credentials in a URL would be stored and logged: set CIVITAI_TOKEN instead")
    segments = [s for s in parts.path.split("/") if s]
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if len(segments) >= 2 and segments[0] == "models":
        model = segments[1]
        if "modelVersionId" not in query:
            raise CivitaiLinkError(
                f"this link names CivitAI model {model}, not one of its versions: add ?modelVersionId=<versionId> "
                "(pick the version on the model page: its link then carries modelVersionId)"
            )
        _prefs(parts.query, "link")  # refuses a token in the query
        return CivitaiRef(_int(query["modelVersionId"], "modelVersionId"))
    if len(segments) == 4 and segments[:3] == ["api", "download", "models"]:
        file_id, prefs = _prefs(parts.query, "download URL")
        version = _int(segments[3], "the model version id")
        return CivitaiRef(version, file_id, () if file_id is not None else prefs)
    if len(segments) == 4 and segments[:3] == ["api", "v1", "model-versions"]:
        _prefs(parts.query, "link")
        return CivitaiRef(_int(segments[3], "the model version id"))
    raise CivitaiLinkError(
        "this CivitAI link names no model version: use the model page's link with ?modelVersionId=<id>, "
        "the download link (…/api/download/models/<versionId>) or civitai:<versionId>"
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _sha256(hashes: Any) -> str | None:
    if not isinstance(hashes, Mapping):
        return None
    value = next((v for k, v in hashes.items() if isinstance(k, str) and k.lower() == "sha256"), None)
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        return value.strip().lower()
    return None


def _matches(entry: Mapping[str, Any], prefs: tuple[tuple[str, str], ...]) -> bool:
    meta = entry.get("metadata") if isinstance(entry.get("metadata"), Mapping) else {}
    for key, wanted in prefs:
        have = entry.get("type") if key == "type" else meta.get(key)
        if not isinstance(have, str) or have.lower() != wanted.lower():
            return False
    return True


def pick_file(version: Any, ref: CivitaiRef) -> CivitaiFile:
    """The file of a model version (the API's JSON answer) that `ref` names: its file id, else the first file the
    preferences select (the primary one among them first), else the primary file. Raises CivitaiLinkError."""
    if not isinstance(version, Mapping) or not isinstance(version.get("files"), list):
        raise CivitaiLinkError(f"CivitAI's answer for model version {ref.version_id} has no file list")
    files = [f for f in version["files"] if isinstance(f, Mapping) and isinstance(f.get("id"), int)]
    if ref.file_id is not None:
        chosen = next((f for f in files if f["id"] == ref.file_id), None)
        if chosen is None:
            known = ", ".join(f"{f['id']} ({_text(f.get('name'))})" for f in files) or "none"
            raise CivitaiLinkError(f"model version {ref.version_id} has no file {ref.file_id} (its files: {known})")
    else:
        candidates = [f for f in files if _matches(f, ref.prefs)]
        candidates.sort(key=lambda f: f.get("primary") is not True)  # stable: the primary first
        if not candidates:
            what = " matching " + urlencode(ref.prefs) if ref.prefs else ""
            raise CivitaiLinkError(f"model version {ref.version_id} has no file{what}")
        chosen = candidates[0]
    model = version.get("model") if isinstance(version.get("model"), Mapping) else {}
    size_kb = chosen.get("sizeKB")
    size = round(size_kb * 1024) if isinstance(size_kb, (int, float)) and size_kb > 0 else None
    air = _AIR_RE.match(_text(version.get("air")))
    return CivitaiFile(
        version_id=ref.version_id,
        file_id=chosen["id"],
        model_id=version.get("modelId") if isinstance(version.get("modelId"), int) else None,
        model_name=_text(model.get("name")),
        version_name=_text(version.get("name")),
        model_type=_text(model.get("type")),
        file_type=_text(chosen.get("type")),
        name=_text(chosen.get("name")),
        sha256=_sha256(chosen.get("hashes")),
        size_estimate=size,
        air_type=air["type"].lower() if air else None,
    )


def safe_file_name(name: str) -> str:
    """A file name from CivitAI made safe to join to a folder: refused (ValueError) when it holds a path
    separator, is `.`/`..`, holds control characters or is too long, rather than guessed at."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"CivitAI's file name {name!r} is not a plain file name: give a dest")
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name.encode()) > 255:
        raise ValueError(f"CivitAI's file name {name!r} cannot be used as is: give a dest")
    return name


def folder_for(file: CivitaiFile) -> str:
    """The ComfyUI models folder a CivitAI file belongs in; ValueError when its type has none here."""
    file_type, model_type = file.file_type.lower(), file.model_type.lower().replace(" ", "")
    if file_type in NOT_MODEL_FILE_TYPES:
        raise ValueError(f"{file.name!r} is {file.file_type!r}, not a model file: pick another file or give a dest")
    folder = FILE_TYPE_FOLDERS.get(file_type)
    if folder is None and file.air_type in TYPE_FOLDERS and file.air_type != "checkpoint":
        folder = TYPE_FOLDERS[file.air_type]
    folder = folder or TYPE_FOLDERS.get(model_type)
    if folder is None:
        raise ValueError(f"CivitAI type {file.model_type or '?'!r} has no ComfyUI models folder here: give a dest")
    assert folder in MODEL_FOLDERS, folder
    return folder


def default_dest(file: CivitaiFile) -> str:
    """Where a CivitAI file goes when the user names no dest: `<folder of its type>/<the API's file name>`."""
    return f"{folder_for(file)}/{safe_file_name(file.name)}"


def download_url(ref: CivitaiRef, endpoint: str = DEFAULT_ENDPOINT) -> str:
    """The download endpoint for `ref` on `endpoint` (built here, never taken from an answer, so the token only
    ever goes to the configured endpoint)."""
    base = f"{endpoint.rstrip('/')}/api/download/models/{ref.version_id}"
    if ref.file_id is not None:
        return f"{base}?fileId={ref.file_id}"
    return f"{base}?{urlencode(ref.prefs)}" if ref.prefs else base
