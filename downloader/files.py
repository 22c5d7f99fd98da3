"""Where a download lives on disk: its temporary name, its control file, placing and quarantining it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .manifest import TEMP_SUFFIX


def part_path(dest: Path) -> Path:
    """The temporary name a download is written under, in the destination folder (same filesystem)."""
    return dest.with_name(dest.name + TEMP_SUFFIX)


def control_path(part: Path) -> Path:
    """aria2's control file for `part` (what makes a resume possible)."""
    return part.with_name(part.name + ".aria2")


def file_size(path: Path) -> int | None:
    """Size in bytes, or None if there is no such file."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place(part: Path, dest: Path) -> None:
    """Atomically move a verified file to its final name; ComfyUI sees all of it or nothing."""
    with open(part, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(part, 0o644)
    os.replace(part, dest)
    fsync_dir(dest.parent)


def remove_partial(part: Path) -> None:
    """Delete a partial download and its control file."""
    part.unlink(missing_ok=True)
    control_path(part).unlink(missing_ok=True)


def quarantine(path: Path) -> Path:
    """Move a bad file aside (same folder, a name ComfyUI does not load) and return the new name."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    return target


def free_bytes(path: Path) -> int:
    """Free space of the filesystem holding `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
