"""YAML manifests -> validated `ModelSpec`s and presets, with errors that name file, model id, field and line.

A manifest has two top-level keys, `presets` (name -> model ids) and `models` (a list of specs). Several
manifests load together into one `Catalog`: ids, preset names and destinations must be unique across all.

A source is stored in its canonical form whatever the user pasted (see `canonical_source`): `hf://owner/repo/path`
(a hub link's revision goes to `revision`), `civitai:<versionId>[+<fileId>]` (CivitAI links and AIRs), or a
plain http(s) URL. A CivitAI source may leave `dest` out: the file then goes where its type belongs, under the
name CivitAI gives it, which is known once resolved (until then the download's dest is a placeholder,
`pending_dest`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .civitai import DEFAULT_ENDPOINT as CIVITAI_ENDPOINT
from .civitai import CivitaiLinkError, CivitaiRef, parse_civitai
from .errors import ManifestError, UnknownPresetError
from .hf_links import DEFAULT_ENDPOINT as HF_ENDPOINT
from .hf_links import HfLinkError, parse_hf_link
from .origins import SECRET_QUERY_KEYS

if TYPE_CHECKING:
    from .config import Settings

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TEMP_SUFFIX = ".part"  # a download in progress is `<dest>.part` (+ aria2's `.part.aria2`)


@dataclass(frozen=True)
class HfSource:
    """`hf://owner/repo/path/in/repo`."""

    repo_id: str
    path: str

    def __str__(self) -> str:
        return f"hf://{self.repo_id}/{self.path}"


@dataclass(frozen=True)
class UrlSource:
    """A direct `http(s)://` URL."""

    url: str

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class CivitaiSource:
    """A model version's file on CivitAI: `civitai:<versionId>[+<fileId>]`."""

    ref: CivitaiRef

    def __str__(self) -> str:
        return str(self.ref)


Source = HfSource | UrlSource | CivitaiSource


@dataclass(frozen=True)
class Endpoints:
    """Where hub and CivitAI links resolve (HF_ENDPOINT, CIVITAI_ENDPOINT): links to those hosts are read as hub /
    CivitAI sources, like links to huggingface.co and civitai.com."""

    hf: str = HF_ENDPOINT
    civitai: str = CIVITAI_ENDPOINT


DEFAULT_ENDPOINTS = Endpoints()


def endpoints_of(settings: Settings) -> Endpoints:
    """Where pasted hub and CivitAI links resolve for these settings: HF_ENDPOINT and CIVITAI_ENDPOINT."""
    return Endpoints(hf=settings.hf_endpoint, civitai=settings.civitai_endpoint)
# Where a CivitAI download without a dest "is" until CivitAI has named its file (a name no real file has).
PENDING_DIR = ".civitai-pending"


def pending_dest(ref: CivitaiRef) -> str:
    """The placeholder dest of a CivitAI download whose file is not named yet (never written to)."""
    return f"{PENDING_DIR}/civitai-{ref.version_id}" + (f"-{ref.file_id}" if ref.file_id is not None else "")


def is_pending(dest: str) -> bool:
    """Whether a stored dest is `pending_dest`'s placeholder (CivitAI names the file once resolved)."""
    return dest.startswith(f"{PENDING_DIR}/")


def canonical_source(text: str, endpoints: Endpoints = DEFAULT_ENDPOINTS) -> tuple[str, str | None]:
    """(source, revision) in the stored form for what a user pasted: a hub link becomes hf://owner/repo/path and
    its revision, a CivitAI link or AIR becomes civitai:<versionId>[+<fileId>]; anything else must be a valid
    source as it is. ValueError with what to write instead."""
    text = text.strip()
    try:
        ref = parse_civitai(text, endpoints.civitai)
        if ref is not None:
            return str(ref), None
        link = parse_hf_link(text, endpoints.hf)
        if link is not None:
            return link.source, link.revision
    except (CivitaiLinkError, HfLinkError) as e:
        raise ValueError(str(e)) from None
    parse_source(text)
    return text, None


def parse_source(text: str) -> Source:
    """Parse a source in its stored form (see `canonical_source`); raises ValueError with a message a user can
    act on."""
    text = text.strip()
    if text.lower().startswith(("civitai:", "urn:air:")):
        try:
            ref = parse_civitai(text)
        except CivitaiLinkError as e:
            raise ValueError(str(e)) from None
        if ref is None:
            raise ValueError("only CivitAI's AIRs (urn:air:…:civitai:…) are sources")
        return CivitaiSource(ref)
    if text.startswith("hf://"):
        parts = [p for p in text[len("hf://") :].split("/")]
        if len(parts) < 3 or any(not p for p in parts):
            raise ValueError("hf:// sources look like hf://owner/repo/path/in/repo")
        if any(p in (".", "..") for p in parts):
            raise ValueError("hf:// path must not contain '.' or '..'")
        return HfSource(repo_id="/".join(parts[:2]), path="/".join(parts[2:]))
    split = urlsplit(text)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError("source must be hf://owner/repo/path or an http(s):// URL")
    if split.username or split.password:
        raise ValueError("credentials in a URL would be stored and logged: set HF_TOKEN or CIVITAI_TOKEN instead")
    if any(k.lower() in SECRET_QUERY_KEYS for k, _ in parse_qsl(split.query)):
        raise ValueError("a token in the URL's query would be stored and logged: set CIVITAI_TOKEN or HF_TOKEN instead")
    return UrlSource(url=text)


def check_dest(dest: str) -> str:
    """Normalise a `dest` and refuse anything that could land outside the models dir (lexically)."""
    if not dest or "\x00" in dest:
        raise ValueError("dest must be a non-empty relative path")
    if "\\" in dest:
        raise ValueError("dest must use '/' separators, not '\\'")
    path = PurePosixPath(dest)
    if path.is_absolute():
        raise ValueError(f"dest {dest!r} is absolute; it must be relative to the models dir")
    if ".." in path.parts:
        raise ValueError(f"dest {dest!r} contains '..' and would escape the models dir")
    parts = [p for p in path.parts if p != "."]
    if not parts or dest.split("/")[-1] in ("", "."):
        raise ValueError(f"dest {dest!r} must name a file")
    if re.match(r"^[A-Za-z]:", parts[0]):
        raise ValueError(f"dest {dest!r} is an absolute Windows path; it must be relative to the models dir")
    if any(len(p.encode()) > 255 for p in parts):
        raise ValueError(f"dest {dest!r} has a name longer than 255 bytes")
    if parts[-1].endswith((TEMP_SUFFIX, ".aria2")):
        raise ValueError(f"dest {dest!r} ends in a suffix reserved for partial downloads")
    return "/".join(parts)


def confine(models_dir: Path, dest: str) -> Path:
    """The absolute path of `dest`, refusing symlinked folders that point outside `models_dir`."""
    target = models_dir / check_dest(dest)
    try:
        root = models_dir.resolve()
        # resolve() follows every symlink that exists now; the file itself may not exist yet.
        real_parent = target.parent.resolve()
        real = target.resolve() if target.is_symlink() else None
    except (OSError, RuntimeError) as e:  # symlink loops, names the filesystem refuses
        raise ValueError(f"dest {dest!r} cannot be resolved: {e}") from None
    if real_parent != root and root not in real_parent.parents:
        raise ValueError(f"dest {dest!r} resolves to {real_parent}, outside the models dir {root}")
    if real is not None and root not in real.parents:
        raise ValueError(f"dest {dest!r} is a symlink to {real}, outside the models dir {root}")
    return target


class ModelSpec(BaseModel):
    """One file to fetch, as written in a manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    source: str
    dest: str | None = Field(default=None, validate_default=True)  # None only for CivitAI sources: `pending_dest`
    revision: str | None = None
    size: Annotated[StrictInt, Field(gt=0)] | None = None
    sha256: str | None = None
    required: StrictBool = True
    description: str | None = None
    manifest: str = Field(default="", exclude=True)  # which file it came from (set by the loader)

    @model_validator(mode="before")
    @classmethod
    def _canonical(cls, data: Any, info: ValidationInfo) -> Any:
        """Store a pasted link in its canonical form; a hub link's revision becomes `revision`. A source that is
        not valid is left as it is, for `_source` to refuse with the field named."""
        if not isinstance(data, dict) or not isinstance(data.get("source"), str):
            return data
        endpoints = (info.context or {}).get("endpoints", DEFAULT_ENDPOINTS)
        try:
            source, revision = canonical_source(data["source"], endpoints)
        except ValueError:
            return data
        data = {**data, "source": source}
        if revision is not None:
            given = data.get("revision")
            if given not in (None, "", revision):
                raise ValueError(f"the source's link is at revision {revision!r} but revision says {given!r}")
            data["revision"] = revision
        return data

    @field_validator("source")
    @classmethod
    def _source(cls, v: str, info: ValidationInfo) -> str:
        return canonical_source(v, (info.context or {}).get("endpoints", DEFAULT_ENDPOINTS))[0]

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None:
            return check_dest(v)
        source = info.data.get("source")  # absent when the source itself was refused
        if source is not None and not isinstance(parse_source(source), CivitaiSource):
            raise ValueError("dest is required (only a CivitAI source may leave it out: its type names the folder)")
        return None

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, str) or not SHA256_RE.match(v.strip().lower()):
            raise ValueError(f"{v!r} is not a sha256 (64 hex digits)")
        return v.strip().lower()

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c in v for c in " \t\n?#")):
            raise ValueError(f"{v!r} is not a branch, tag or commit")
        return v

    @property
    def parsed_source(self) -> Source:
        return parse_source(self.source)


class PresetSpec(BaseModel):
    """A named group of model ids; in YAML either a list of ids or {description, models}."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[Annotated[str, Field(pattern=ID_PATTERN)]]
    description: str | None = None


class ManifestFile(BaseModel):
    """The top level of one manifest file."""

    model_config = ConfigDict(extra="forbid")

    presets: dict[Annotated[str, Field(pattern=ID_PATTERN)], PresetSpec] = {}
    models: list[ModelSpec] = []

    @field_validator("presets", mode="before")
    @classmethod
    def _preset_lists(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: {"models": p} if isinstance(p, list) else p for k, p in v.items()}
        return v


@dataclass
class Catalog:
    """Every model and preset of the loaded manifests."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    presets: dict[str, PresetSpec] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    preset_origin: dict[str, str] = field(default_factory=dict)

    def select(self, presets: Sequence[str] = (), only: Sequence[str] = ()) -> list[ModelSpec]:
        """Models of the given presets plus `only` ids, in manifest order, each once; all models if both empty."""
        if not presets and not only:
            return list(self.models.values())
        wanted: set[str] = set()
        for name in presets:
            if name not in self.presets:
                known = ", ".join(sorted(self.presets)) or "none"
                raise UnknownPresetError(f"unknown preset {name!r} (known presets: {known})")
            wanted.update(self.presets[name].models)
        for model_id in only:
            if model_id not in self.models:
                close = difflib.get_close_matches(model_id, list(self.models), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise UnknownPresetError(f"unknown model id {model_id!r}{hint}")
            wanted.add(model_id)
        return [m for m in self.models.values() if m.id in wanted]

    def presets_of(self, model_id: str) -> list[str]:
        """Names of the presets that include a model."""
        return [name for name, p in self.presets.items() if model_id in p.models]


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line number."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == key), None)
            if pair is None:  # a missing key: the line of the mapping that lacks it
                return line
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_manifest(text: str, name: str, endpoints: Endpoints = DEFAULT_ENDPOINTS) -> ManifestFile:
    """Parse and validate one manifest's text; `name` is used in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        context = ""
        if e.context and e.context_mark and e.context_mark.line + 1 != line:
            context = f" ({e.context} on line {e.context_mark.line + 1})"
        raise ManifestError(f"YAML syntax error: {e.problem or e}{context}", file=name, line=line) from None
    except yaml.YAMLError as e:
        raise ManifestError(f"YAML error: {e}", file=name) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ManifestError("top level must be a mapping with 'presets' and 'models'", file=name, line=1)
    _check_duplicate_keys(root, name)
    try:
        manifest = ManifestFile.model_validate(data, context={"endpoints": endpoints})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        model_id = None
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            raw = (data.get("models") or [])[loc[1]]
            model_id = raw.get("id") if isinstance(raw, dict) else None
            model_id = str(model_id) if model_id is not None else f"#{loc[1] + 1}"
        field_name = str(loc[-1]) if loc and not isinstance(loc[-1], int) else None
        if len(loc) >= 2 and loc[0] == "presets":
            field_name = f"presets.{loc[1]}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        line = _line_of(root, loc)
        raise ManifestError(msg, file=name, model_id=model_id, field=field_name, line=line) from None
    models = [m.model_copy(update={"manifest": name}) for m in manifest.models]
    return ManifestFile.model_construct(presets=manifest.presets, models=models)


def _check_duplicate_keys(node: yaml.Node | None, name: str, seen_nodes: set[int] | None = None) -> None:
    """PyYAML silently keeps the last of two equal keys; a manifest typo must not vanish like that."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if node is None or id(node) in seen_nodes:  # aliases can make the tree a graph
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for k, v in node.value:
            if k.value in keys:
                model_id = next((str(v2.value) for k2, v2 in node.value if k2.value == "id"), None)
                raise ManifestError(
                    f"key {k.value!r} appears twice",
                    file=name,
                    model_id=model_id,
                    field=str(k.value),
                    line=k.start_mark.line + 1,
                )
            keys.add(k.value)
            _check_duplicate_keys(v, name, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            _check_duplicate_keys(v, name, seen_nodes)


def manifest_paths(dirs_or_files: Iterable[Path]) -> list[Path]:
    """Expand folders to their *.yaml / *.yml files (sorted); missing folders are skipped."""
    out: list[Path] = []
    for p in dirs_or_files:
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file()))
        elif p.exists():
            out.append(p)
        elif p.suffix in (".yaml", ".yml"):
            raise ManifestError("manifest file not found", file=str(p))
    return out


def load_catalog(paths: Iterable[Path], models_dir: Path, endpoints: Endpoints = DEFAULT_ENDPOINTS) -> Catalog:
    """Load manifests (files or folders) into one Catalog, checking cross-file consistency and dest confinement."""
    catalog = Catalog()
    dests: dict[str, str] = {}
    for path in manifest_paths(paths):
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError(f"cannot read: {e}", file=name) from None
        manifest = parse_manifest(text, name, endpoints)
        for model in manifest.models:
            if model.id in catalog.models:
                other = catalog.models[model.id].manifest
                where = "earlier in this file" if other == name else f"in {other}"
                raise ManifestError(f"duplicate id (already defined {where})", file=name, model_id=model.id, field="id")
            if model.dest is None:  # CivitAI names it once resolved
                catalog.models[model.id] = model
                continue
            if model.dest in dests:
                raise ManifestError(
                    f"dest {model.dest!r} is already the dest of model {dests[model.dest]!r}",
                    file=name,
                    model_id=model.id,
                    field="dest",
                )
            try:
                confine(models_dir, model.dest)
            except ValueError as e:
                raise ManifestError(str(e), file=name, model_id=model.id, field="dest") from None
            catalog.models[model.id] = model
            dests[model.dest] = model.id
        for preset_name, preset in manifest.presets.items():
            if preset_name in catalog.presets:
                raise ManifestError(
                    f"preset {preset_name!r} is already defined in {catalog.preset_origin[preset_name]}",
                    file=name,
                    field=f"presets.{preset_name}",
                )
            catalog.presets[preset_name] = preset
            catalog.preset_origin[preset_name] = name
        catalog.files.append(path)
    # Presets may name models of any loaded file, so check them once everything is in.
    for preset_name, preset in catalog.presets.items():
        for model_id in preset.models:
            if model_id not in catalog.models:
                raise ManifestError(
                    f"preset names unknown model id {model_id!r}",
                    file=catalog.preset_origin[preset_name],
                    field=f"presets.{preset_name}",
                )
    return catalog


def default_id(dest: str) -> str:
    """The id of an added download when none is given: its file name without the extension, made plain."""
    name = dest.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:100] or "download"
