"""Which kind of filesystem a folder is on: a local disk, or one that other machines share (FUSE, NFS, SMB, ...).

RunPod's network volumes are MooseFS, mounted through FUSE: every pod of a fleet sees the same files, but SQLite's
WAL mode keeps its index in shared memory that only one host sees, so the state database must know where it is.
The answer comes from statfs(2)'s f_type, the filesystem's magic number, which the kernel reports for the folder
itself (a bind mount into a container included), with no parsing of mount tables.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

# f_type values from linux/magic.h (and the filesystems' own headers) of filesystems that more than one machine
# can mount at once, or that sit behind a userspace daemon: their locks and caches are not a local disk's.
SHARED_FILESYSTEMS: dict[int, str] = {
    0x65735546: "fuse",  # MooseFS (RunPod network volumes), sshfs, s3fs, JuiceFS, ...
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x517B: "smb",
    0x00C36400: "ceph",
    0x01021997: "9p",
    0x5346414F: "afs",
    0x6B414653: "kafs",
    0x73757245: "coda",
    0x01161970: "gfs2",
    0x7461636F: "ocfs2",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
}
# A few local ones by name, for messages only.
LOCAL_FILESYSTEMS: dict[int, str] = {
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlayfs",
    0x2FC12FC1: "zfs",
}

_libc: ctypes.CDLL | None = None


@dataclass(frozen=True)
class FsKind:
    """What statfs says about a folder: the magic number, a name for people, and whether it is shared."""

    magic: int
    name: str
    shared: bool


def _statfs_type(path: Path) -> int:
    """statfs(2)'s f_type for `path` (Python's os.statvfs leaves it out)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    # struct statfs starts with f_type (a long on the 64-bit Linux ABIs); 256 bytes hold the whole struct.
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def filesystem_of(path: Path) -> FsKind:
    """The kind of filesystem `path` (an existing file or folder) is on. OSError when statfs fails."""
    magic = _statfs_type(path)
    if magic in SHARED_FILESYSTEMS:
        return FsKind(magic, SHARED_FILESYSTEMS[magic], True)
    return FsKind(magic, LOCAL_FILESYSTEMS.get(magic, f"0x{magic:x}"), False)
