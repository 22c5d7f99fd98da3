"""Path confinement for the file manager: every path the web API receives goes through `resolve()`.

Pure (no Flask): the API hands over the path string exactly as it arrived, decoded once by the HTTP layer,
and gets back absolute paths that are known to stay inside the root, or a `PathError` whose `status` is the
HTTP status to answer with (400: malformed, 403: leaves the root) and whose message says why.

Rules:

* A path is relative to the root and '/'-separated; "" names the root itself. One trailing "/" is allowed
  ("models/"), no other empty segment: no leading "/" (an absolute path), no "a//b".
* Refused outright: NUL and other control characters, backslashes (a Windows separator, a classic filter
  bypass), "." and ".." segments, over-long names, more than MAX_LENGTH characters, text that is not
  encodable as a file name.
* Nothing is percent-decoded here. The HTTP layer decodes once ("%2e%2e" in a URL arrives as ".." and is
  refused); whatever is still left looking like "%2e%2e" after that is an ordinary file name made of those
  characters, and stays one: decoding twice is how double-encoding attacks work.
* Symbolic links are resolved by hand, one segment at a time, against the real root: a link whose target stays
  inside the root is followed (also a chain of them), one that points (or whose chain passes) outside, even if
  dangling, makes the whole path refused (403). Nothing outside the root is ever stat()ed or read to decide.
  A loop (more than MAX_LINKS expansions) is refused (400).

`Resolved.path` keeps the last segment unresolved (delete/rename act on a symlink itself, never on its target),
`Resolved.real` follows it; both are inside the root.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

MAX_LENGTH = 4096  # characters in a whole path
MAX_NAME_BYTES = 255  # bytes in one name (Linux NAME_MAX)
MAX_LINKS = 40  # symlink expansions per path, as the kernel's ELOOP limit


class PathError(ValueError):
    """A path the API refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Resolved:
    """A confined path. `rel`: normalised, '/'-separated, relative to the root ("" for the root)."""

    rel: str
    path: Path  # the parent fully resolved, the last name as given (a symlink stays a symlink)
    real: Path  # fully resolved (what a read reaches)

    @property
    def is_root(self) -> bool:
        return self.rel == ""

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]


def check_name(name: str) -> str:
    """One file or folder name: not empty, no separators, no control characters, not "." or "..", not too long."""
    if not isinstance(name, str) or name == "":
        raise PathError("empty name")
    if "\x00" in name:
        raise PathError("NUL byte in path")
    if "\\" in name:
        raise PathError("backslashes are not allowed in paths (use '/')")
    if "/" in name:
        raise PathError(f"{name!r} is a path, not a name")
    if name in (".", ".."):
        raise PathError(f"'{name}' is not allowed in paths")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise PathError("control characters are not allowed in names")
    try:
        size = len(name.encode("utf-8", "surrogateescape"))
    except UnicodeError:
        raise PathError("the name is not valid text for a file name") from None
    if size > MAX_NAME_BYTES:
        raise PathError(f"name too long ({size} bytes; at most {MAX_NAME_BYTES})")
    return name


def split(rel: object) -> list[str]:
    """The checked segments of an API path ("" -> [], the root)."""
    if not isinstance(rel, str):
        raise PathError("the path must be a string")
    if len(rel) > MAX_LENGTH:
        raise PathError(f"path too long (at most {MAX_LENGTH} characters)")
    if "\x00" in rel:
        raise PathError("NUL byte in path")
    if "\\" in rel:
        raise PathError("backslashes are not allowed in paths (use '/')")
    if rel.startswith("/"):
        raise PathError("absolute paths are not allowed: give the path relative to the workspace")
    if rel == "":
        return []
    body = rel.removesuffix("/")
    parts = body.split("/")
    if "" in parts:
        raise PathError("empty path segment ('//')")
    for part in parts:
        check_name(part)
    return parts


def _inside(path: str, root: str) -> str | None:
    """`path` (absolute, normalised) relative to `root`, or None if it is not the root or under it."""
    if path == root:
        return ""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def _is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise PathError(f"cannot read {os.path.basename(path)!r}: {e.strerror}") from None


class _Walker:
    """Resolves segments against the real root, following links without ever leaving it."""

    def __init__(self, root_real: str, root_given: str, shown: str) -> None:
        self.root = root_real
        self.roots = (root_real, root_given)
        self.shown = shown  # the path as the caller gave it, for messages
        self.links = 0

    def outside(self) -> PathError:
        return PathError(f"{self.shown!r} goes through a symbolic link that leads outside the workspace", 403)

    def walk(self, base: list[str], segments: list[str], follow_last: bool) -> list[str]:
        cur = list(base)
        for i, seg in enumerate(segments):
            last = i == len(segments) - 1
            if seg in ("", "."):
                continue
            if seg == "..":
                if not cur:
                    raise self.outside()
                cur.pop()
                continue
            cur.append(seg)
            if last and not follow_last:
                break
            full = os.path.join(self.root, *cur)
            if _is_link(full):
                self.links += 1
                if self.links > MAX_LINKS:
                    raise PathError(f"{self.shown!r}: too many levels of symbolic links (a loop?)")
                try:
                    target = os.readlink(full)
                except OSError as e:
                    raise PathError(f"cannot read link {seg!r}: {e.strerror}") from None
                cur.pop()
                if target.startswith("/"):
                    norm = os.path.normpath(target)
                    for root in self.roots:
                        rel = _inside(norm, root)
                        if rel is not None:
                            cur = self.walk([], rel.split("/") if rel else [], True)
                            break
                    else:
                        raise self.outside()
                else:
                    cur = self.walk(cur, target.split("/"), True)
        return cur


def resolve(root: str | os.PathLike[str], rel: object) -> Resolved:
    """Confine `rel` (an API path, relative to `root`) to `root`; raise PathError if it is malformed or leaves it."""
    segments = split(rel)
    root_given = os.path.normpath(os.path.abspath(os.fspath(root)))
    root_real = os.path.realpath(root_given)
    walker = _Walker(root_real, root_given, str(rel))
    real = walker.walk([], segments, True)
    if segments:
        parent = walker.walk([], segments[:-1], True)
        path = [*parent, segments[-1]]
    else:
        path = []
    return Resolved("/".join(segments), Path(root_real, *path), Path(root_real, *real))


def relative(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str | None:
    """The API path of an absolute path, if it is the root or inside it (after resolving `root` only)."""
    root_real = os.path.realpath(os.fspath(root))
    return _inside(os.path.normpath(os.fspath(path)), root_real)
