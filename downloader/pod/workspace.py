"""The pod's workspace: ComfyUI moved onto the persistent volume, and JupyterLab's token."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from ..config import JUPYTER_TOKEN_FILE, PodSettings
from ..secret_files import read_or_create


def persist_comfyui(image_dir: Path, workspace: Path) -> str:
    """First run: move the image's ComfyUI into the workspace; later runs: make the image path a link to it."""
    target = workspace / "ComfyUI"
    workspace.mkdir(parents=True, exist_ok=True)
    if image_dir.is_symlink():
        if image_dir.resolve() == target.resolve():
            return f"{image_dir} -> {target} (already linked)"
        image_dir.unlink()
    if not target.exists():
        if not image_dir.is_dir():
            target.mkdir(parents=True)
            return f"{image_dir} not found: created an empty {target}"
        staging = workspace / ".ComfyUI.moving"
        shutil.rmtree(staging, ignore_errors=True)  # a move cut short by a restart starts over
        shutil.copytree(image_dir, staging, symlinks=True)
        os.replace(staging, target)
        shutil.rmtree(image_dir)
        image_dir.symlink_to(target)
        return f"first run: moved {image_dir} to {target}"
    if image_dir.is_dir():
        shutil.rmtree(image_dir)  # the image's pristine copy; the workspace's copy has the user's nodes
    image_dir.symlink_to(target)
    return f"linked {image_dir} -> {target} (custom nodes and models of earlier pods kept)"


def jupyter_token(cfg: PodSettings, state_dir: Path) -> tuple[str, bool]:
    """JUPYTER_PASSWORD, or a token generated once and kept in the state folder (0600)."""
    if cfg.jupyter_password:
        return cfg.jupyter_password, False
    # Pods starting together on one volume may both create it: one wins, the other reads its file whole.
    return read_or_create(state_dir / JUPYTER_TOKEN_FILE, lambda: secrets.token_urlsafe(24))[0], True
