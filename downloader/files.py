"""Where a download lives on disk: its temporary name, its control file, placing and quarantining it."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

from .manifest import TEMP_SUFFIX


def part_path(dest: Path) -> Path:
    """The temporary name a download is written under, in the destination folder (same filesystem)."""
    return dest.with_name(dest.name + TEMP_SUFFIX)


def control_path(part: Path) -> Path:
    """aria2's control file for `part` (what makes a resume possible)."""
    return part.with_name(part.name + ".aria2")


ARIA2_BLOCK = 16 * 1024  # aria2 tracks a piece in flight in blocks of this size


def _bits(field: bytes, count: int) -> list[int]:
    """The indexes of the set bits among the first `count` of a bitfield (most significant bit first)."""
    return [i for i in range(count) if field[i // 8] >> (7 - i % 8) & 1]


def resumable_bytes(part: Path) -> int:
    """The bytes of `part` aria2 will keep when it resumes: the finished pieces its control file records plus the
    finished blocks of the pieces in flight (aria2's technical notes, "Control File Format"). The part file itself
    runs ahead of that (several connections write into it at once), so its length would overstate the resume
    point. Without a readable control file: the part's length (aria2 trusts it then)."""
    try:
        data = control_path(part).read_bytes()
        order = ">" if struct.unpack_from(">H", data, 0)[0] == 1 else "<"  # version 1 is big-endian, 0 native
        (hash_len,) = struct.unpack_from(f"{order}I", data, 6)
        at = 10 + hash_len
        piece, total, _upload, bits_len = struct.unpack_from(f"{order}IQQI", data, at)
        at += 24
        pieces = -(-total // piece) if piece else 0
        if not pieces or bits_len * 8 < pieces:
            return file_size(part) or 0
        finished = _bits(data[at : at + bits_len], pieces)
        at += bits_len
        done = sum(min(piece, total - i * piece) for i in finished)
        (in_flight,) = struct.unpack_from(f"{order}I", data, at)
        at += 4
        for _ in range(in_flight):
            _index, length, field_len = struct.unpack_from(f"{order}III", data, at)
            at += 12
            blocks = -(-length // ARIA2_BLOCK)
            if field_len * 8 < blocks or len(data) < at + field_len:
                return file_size(part) or 0
            done += sum(min(ARIA2_BLOCK, length - b * ARIA2_BLOCK) for b in _bits(data[at : at + field_len], blocks))
            at += field_len
    except (OSError, struct.error):
        return file_size(part) or 0
    return done


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
