"""ComfyUI's `extra_model_paths.yaml`: a section of our own that points ComfyUI at MODELS_DIR, and nothing else.

The file belongs to the user (ComfyUI's documented way to add model folders), so the entrypoint never rewrites it:
it keeps one block between two marker lines and changes only that block; everything outside it stays byte for
byte. Before it changes the file it keeps the previous version as `extra_model_paths.yaml.bak`. A file it cannot
edit safely (not valid YAML, or a `downloader:` section the user wrote) is left alone, and the message says what
to add by hand.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from ..comfy import MODEL_FOLDERS

FILE_NAME = "extra_model_paths.yaml"
SECTION = "downloader"
BEGIN = "# >>> pod-downloader: managed by the entrypoint; what is between these lines is rewritten at start"
END = "# <<< pod-downloader"
# What the first versions of the entrypoint wrote over the whole file: such a file is ours to replace.
OLD_HEADER = "# Written by the entrypoint: ComfyUI also loads the models the downloader places here."


def managed_block(models_dir: Path) -> str:
    """Our section: ComfyUI also looks for each model folder under MODELS_DIR."""
    lines = [BEGIN, f"{SECTION}:", f"  base_path: {models_dir}"]
    lines += [f"  {folder}: {folder}/" for folder in MODEL_FOLDERS]
    return "\n".join([*lines, END]) + "\n"


def _without_block(text: str) -> str | None:
    """The text with our block cut out (None if the markers are broken: only one of them, or out of order)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 and end < 0:
        return text
    if start < 0 or end < start:
        return None
    after = text.find("\n", end)
    return text[:start] + (text[after + 1:] if after >= 0 else "")


def _parses_with_section(text: str, models_dir: Path) -> bool:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and isinstance(data.get(SECTION), dict) and \
        data[SECTION].get("base_path") == str(models_dir)


def _write(path: Path, text: str) -> None:
    """Keep the previous file as .bak, then replace it atomically (a crash leaves the old or the new file)."""
    if path.exists():
        path.with_name(path.name + ".bak").write_bytes(path.read_bytes())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ensure_model_paths(comfy_dir: Path, models_dir: Path) -> str | None:
    """Make ComfyUI see MODELS_DIR when it is not ComfyUI's own models folder; returns what was done, in words."""
    if models_dir.resolve() == (comfy_dir / "models").resolve():
        return None
    path = comfy_dir / FILE_NAME
    block = managed_block(models_dir)
    by_hand = f"add this section to {path} yourself so ComfyUI finds the downloaded models:\n{block}"
    if not path.exists():
        _write(path, block)
        return f"ComfyUI reads models from {models_dir} too ({FILE_NAME})"
    text = path.read_text()
    if text.startswith(OLD_HEADER):
        text = ""  # a whole file an earlier version wrote: nothing of the user's in it
    rest = _without_block(text)
    if rest is None:
        return f"{FILE_NAME} has only one of the pod-downloader marker lines: left alone; {by_hand}"
    try:
        user = yaml.safe_load(rest) if rest.strip() else {}
    except yaml.YAMLError as e:
        return f"{FILE_NAME} is not valid YAML ({str(e).splitlines()[0]}): left alone; {by_hand}"
    if not isinstance(user, dict | None):
        return f"{FILE_NAME} is not a YAML mapping: left alone; {by_hand}"
    if user and SECTION in user:
        return f"{FILE_NAME} already has a `{SECTION}:` section of yours: left alone; rename it, or {by_hand}"
    updated = rest + ("" if not rest or rest.endswith("\n") else "\n") + block
    if updated == path.read_text():
        return f"ComfyUI reads models from {models_dir} too ({FILE_NAME}, unchanged)"
    if not _parses_with_section(updated, models_dir):
        return f"{FILE_NAME} could not be updated safely: left alone; {by_hand}"
    _write(path, updated)
    return f"ComfyUI reads models from {models_dir} too ({FILE_NAME}: our section updated, yours kept, " \
           f"the previous file in {FILE_NAME}.bak)"
