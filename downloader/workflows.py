"""ComfyUI workflows -> the model files they need (folder, name, and the URL the workflow names, if any).

A workflow is untrusted input (people download them from anywhere): its size is limited before parsing, its
nesting and element count after, and every shape is checked; anything wrong is a WorkflowError, never a crash.

Two formats:
- UI (what ComfyUI saves): `nodes[]` with `type`, `mode` (0 active, 2 muted, 4 bypassed), `widgets_values` and
  `properties.models[]` ({name, url, directory, hash?, hash_type?}); a root `models[]`; subgraphs under
  `definitions.subgraphs[]`, each with its own `nodes[]`, used by nodes whose `type` is the subgraph's id. As
  ComfyUI's own missing-model scan does, a `models` entry counts when its `name` is a string widget value of an
  active node (for a node's own entries: of that node). A subgraph counts only through an active node using it.
  Core loader nodes (LOADERS) also count without a `models` entry: their file then has no URL.
- API (what "Export (API)" saves): `{"<id>": {"class_type": …, "inputs": {…}}}`: the file names in loader inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DownloaderError, human_bytes

MAX_WORKFLOW_BYTES = 16 * 1024 * 1024  # the largest real workflows (many subgraphs, notes) are a few MB
MAX_DEPTH = 64  # real workflows nest about 10 deep
MAX_ITEMS = 1_000_000  # values in the whole document

# Core loader class -> its file-name inputs with the folder each reads, in widget order from the first widget
# (a UI node's `widgets_values` is positional; these inputs are each loader's first widgets).
LOADERS: dict[str, tuple[tuple[str, str], ...]] = {
    "CheckpointLoaderSimple": (("ckpt_name", "checkpoints"),),
    "ImageOnlyCheckpointLoader": (("ckpt_name", "checkpoints"),),
    "unCLIPCheckpointLoader": (("ckpt_name", "checkpoints"),),
    "UNETLoader": (("unet_name", "diffusion_models"),),
    "CLIPLoader": (("clip_name", "text_encoders"),),
    "DualCLIPLoader": (("clip_name1", "text_encoders"), ("clip_name2", "text_encoders")),
    "TripleCLIPLoader": tuple((f"clip_name{i}", "text_encoders") for i in (1, 2, 3)),
    "QuadrupleCLIPLoader": tuple((f"clip_name{i}", "text_encoders") for i in (1, 2, 3, 4)),
    "VAELoader": (("vae_name", "vae"),),
    "LoraLoader": (("lora_name", "loras"),),
    "LoraLoaderModelOnly": (("lora_name", "loras"),),
    "ControlNetLoader": (("control_net_name", "controlnet"),),
    "DiffControlNetLoader": (("control_net_name", "controlnet"),),
    "UpscaleModelLoader": (("model_name", "upscale_models"),),
    "CLIPVisionLoader": (("clip_name", "clip_vision"),),
    "AudioEncoderLoader": (("audio_encoder_name", "audio_encoders"),),
    "ModelPatchLoader": (("name", "model_patches"),),
}
# Inputs whose name says their folder whatever the node (custom loaders reuse them); `clip_name` and
# `model_name` are left out: their folder depends on the node.
INPUT_FOLDERS: dict[str, str] = {
    "ckpt_name": "checkpoints",
    "unet_name": "diffusion_models",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "control_net_name": "controlnet",
}
# Widget values that are choices, not files (VAELoader's built-in decoders, "None" in custom lora stacks).
NOT_FILES = frozenset({"", "None", "none", "pixel_space", "taesd", "taesdxl", "taesd3", "taef1"})
ACTIVE = 0  # LiteGraph's ALWAYS; 2 (NEVER) is muted, 4 is bypassed: neither runs


class WorkflowError(DownloaderError, ValueError):
    """A workflow that cannot be read; the message says why."""


@dataclass(frozen=True)
class Wanted:
    """A model file a workflow needs, as the workflow says it (nothing checked yet: see workflow_sources)."""

    folder: str
    name: str
    url: str | None = None
    sha256: str | None = None  # from the entry's hash when its hash_type is sha256
    nodes: tuple[str, ...] = ()  # "#12 UNETLoader", "#130/105 CLIPLoader" (inside a subgraph), "API #4 …"


def load_workflow(data: bytes | str, limit: int = MAX_WORKFLOW_BYTES) -> dict[str, Any]:
    """Parse a workflow's JSON with limits on size, nesting and element count; the top level must be an object."""
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > limit:
        raise WorkflowError(f"the workflow is {human_bytes(size)}; the limit is {human_bytes(limit)}")
    try:
        doc = json.loads(data)
    except RecursionError:
        raise WorkflowError(f"the workflow nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, bad UTF-8, an integer of too many digits
        raise WorkflowError(f"the workflow is not valid JSON: {e}") from None
    _check_bounds(doc)
    if not isinstance(doc, dict):
        raise WorkflowError("a workflow is a JSON object (ComfyUI's saved workflow or its API export)")
    return doc


def _check_bounds(doc: Any) -> None:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    items = 0
    while stack:
        value, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            raise WorkflowError(f"the workflow has more than {MAX_ITEMS} values")
        if depth > MAX_DEPTH:
            raise WorkflowError(f"the workflow nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def is_api_format(doc: Mapping[str, Any]) -> bool:
    """An API export: every value is a node object with a `class_type` (and no `nodes` list)."""
    return bool(doc) and "nodes" not in doc and all(isinstance(v, dict) and "class_type" in v for v in doc.values())


def wanted_files(doc: Mapping[str, Any]) -> list[Wanted]:
    """The model files a parsed workflow needs, each (folder, name) once, in the order first met. WorkflowError for
    an object that is neither format (no `nodes` list, and not nodes with a `class_type`)."""
    if not is_api_format(doc) and "nodes" not in doc:
        raise WorkflowError(
            "this JSON is not a ComfyUI workflow: it has no 'nodes' (a saved workflow) and is not an API export "
            '({"<id>": {"class_type": ..., "inputs": ...}})'
        )
    found = _api_wants(doc) if is_api_format(doc) else _ui_wants(doc)
    merged: dict[tuple[str, str], Wanted] = {}
    for want in found:
        key = (canonical_folder(want.folder), want.name)
        have = merged.get(key)
        if have is None:
            merged[key] = want
            continue
        best = have if have.url or not want.url else want  # the first entry that says where to get it
        nodes = have.nodes + tuple(n for n in want.nodes if n not in have.nodes)
        merged[key] = Wanted(best.folder, best.name, best.url, best.sha256 or have.sha256 or want.sha256, nodes)
    return list(merged.values())


def canonical_folder(folder: str) -> str:
    """ComfyUI reads `unet` with `diffusion_models` and `clip` with `text_encoders`: one file, one key."""
    return {"unet": "diffusion_models", "clip": "text_encoders"}.get(folder, folder)


# --- API format --------------------------------------------------------------------------------------------------


def _api_wants(doc: Mapping[str, Any]) -> Iterator[Wanted]:
    for node_id, node in doc.items():
        inputs = node.get("inputs", {})
        cls = node.get("class_type")
        if not isinstance(inputs, dict) or not isinstance(cls, str):
            raise WorkflowError(f"node {node_id!r}: class_type must be text and inputs an object")
        pairs = LOADERS.get(cls) or tuple((k, INPUT_FOLDERS[k]) for k in inputs if k in INPUT_FOLDERS)
        for key, folder in pairs:
            value = inputs.get(key)
            if isinstance(value, str) and value not in NOT_FILES:  # a list is a link to another node's output
                yield Wanted(folder, value, nodes=(f"#{node_id} {cls}",))


# --- UI format ---------------------------------------------------------------------------------------------------


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WorkflowError(f"{what} must be a list")
    return value


def _active_nodes(doc: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, node) for every active node: the top level's, and those of each subgraph an active node uses."""
    definitions = doc.get("definitions")
    definitions = {} if definitions is None else definitions
    if not isinstance(definitions, dict):
        raise WorkflowError("'definitions' must be an object")
    subgraphs: dict[str, list[Any]] = {}
    for i, sg in enumerate(_list(definitions.get("subgraphs"), "'definitions.subgraphs'")):
        if not isinstance(sg, dict) or not isinstance(sg.get("id"), str):
            raise WorkflowError(f"subgraph #{i + 1} must be an object with an id")
        subgraphs[sg["id"]] = _list(sg.get("nodes"), f"subgraph {sg['id']!r}'s 'nodes'")
    pending: list[tuple[str, list[Any]]] = [("#", _list(doc.get("nodes"), "'nodes'"))]
    entered: set[str] = set()  # each subgraph once: it may be used twice, or (broken files) by itself
    while pending:
        prefix, nodes = pending.pop()
        for i, node in enumerate(nodes):
            if not isinstance(node, dict):
                raise WorkflowError(f"node {i + 1} of {'the workflow' if prefix == '#' else prefix} is not an object")
            if node.get("mode", ACTIVE) != ACTIVE:
                continue
            where = f"{prefix}{node.get('id', i + 1)}"
            yield where, node
            kind = node.get("type")
            if isinstance(kind, str) and kind in subgraphs and kind not in entered:
                entered.add(kind)
                pending.append((f"{where}/", subgraphs[kind]))


def _strings(node: Mapping[str, Any]) -> list[str]:
    """A node's string widget values (a list, or an object as some custom nodes save them)."""
    values = node.get("widgets_values")
    items = values.values() if isinstance(values, dict) else values if isinstance(values, list) else []
    return [v for v in items if isinstance(v, str)]


def _entry(entry: Any, where: str) -> Wanted | None:
    """A `models` entry as a Wanted; None when it names no file (nothing to match a widget with)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return None
    directory = entry.get("directory")
    url = entry.get("url")
    digest = entry.get("hash")
    sha = None
    if str(entry.get("hash_type", "")).lower() == "sha256" and isinstance(digest, str):
        sha = digest.strip().lower() if len(digest.strip()) == 64 else None
        sha = sha if sha and all(c in "0123456789abcdef" for c in sha) else None
    return Wanted(
        folder=directory if isinstance(directory, str) else "",
        name=entry["name"],
        url=url if isinstance(url, str) and url.strip() else None,
        sha256=sha,
        nodes=(where,),
    )


def _ui_wants(doc: Mapping[str, Any]) -> Iterator[Wanted]:
    used: set[str] = set()
    for where, node in _active_nodes(doc):
        strings = _strings(node)
        used.update(strings)
        kind = node.get("type") if isinstance(node.get("type"), str) else "?"
        label = f"{where} {kind}"
        properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        for entry in _list(properties.get("models"), f"node {where}'s 'properties.models'"):
            want = _entry(entry, label)
            if want is not None and want.name in strings:
                yield want
        widgets = node.get("widgets_values")
        for index, (_key, folder) in enumerate(LOADERS.get(kind, ())):
            if isinstance(widgets, list) and index < len(widgets):
                value = widgets[index]
                if isinstance(value, str) and value not in NOT_FILES:
                    yield Wanted(folder, value, nodes=(label,))
    for entry in _list(doc.get("models"), "'models'"):
        want = _entry(entry, "workflow models")
        if want is not None and want.name in used:
            yield want
