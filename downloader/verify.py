"""sha256 in Python (hashlib), following a download's completed prefix so the check ends seconds after the last byte.

aria2 reports which pieces are complete (`bitfield`, `pieceLength`). With the in-order piece selector the
contiguous completed prefix grows at nearly the download speed, and a `PrefixHasher` thread feeds it to
sha256 while the page cache still holds it. When the download completes only the last stretch is left.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK = 8 * 1024 * 1024


def completed_prefix(bitfield: str | None, piece_length: int, total: int) -> int:
    """Bytes from the start of the file that are complete, from aria2's hex bitfield (MSB = piece 0)."""
    if not bitfield or piece_length <= 0 or total <= 0:
        return 0
    pieces = 0
    for ch in bitfield:
        nibble = int(ch, 16)
        if nibble == 0xF:
            pieces += 4
            continue
        for bit in (8, 4, 2, 1):  # count the leading ones of this nibble, then stop
            if not nibble & bit:
                break
            pieces += 1
        break
    return min(pieces * piece_length, total)


class Cancelled(Exception):
    """A hash was stopped before the end (pause, shutdown)."""


def sha256_file(
    path: Path, progress: Callable[[int], None] | None = None, cancel: threading.Event | None = None
) -> str:
    """Hash a whole file; `progress` gets the bytes hashed so far; setting `cancel` stops it."""
    h = hashlib.sha256()
    done = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            if cancel is not None and cancel.is_set():
                raise Cancelled(str(path))
            h.update(view[:n])
            done += n
            if progress:
                progress(done)
    return h.hexdigest()


class HashTask:
    """Run a hash in a daemon thread (a 14 GB file must not hold up the loop or the exit)."""

    def __init__(
        self, path: Path, hasher: PrefixHasher | None = None, size: int = 0, on_done: Callable[[], None] | None = None
    ) -> None:
        self.path, self.hasher, self.size, self.on_done = path, hasher, size, on_done
        self.hashed = 0
        self.digest: str | None = None
        self.error: BaseException | None = None
        self.full_pass = hasher is None  # True when every byte was read after the download ended
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"verify:{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self.hasher is not None:
                self.digest = self.hasher.finish(self.size)
            else:
                self.digest = sha256_file(self.path, self._progress, self._cancel)
        except BaseException as e:  # noqa: BLE001 - handed to the Manager, which reports it
            self.error = e
        if self.on_done is not None:
            self.on_done()

    def _progress(self, n: int) -> None:
        self.hashed = n

    @property
    def progress(self) -> int:
        return self.hasher.hashed if self.hasher is not None else self.hashed

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def cancel(self) -> None:
        self._cancel.set()
        if self.hasher is not None:
            self.hasher.cancel()


class PrefixHasher:
    """Hash a file that is still being written, up to a target offset that only grows.

    `advance(n)` raises the target; a background thread reads and hashes up to it. `finish(size)` waits
    for the whole file and returns the hex digest. Reads never go past the target, so bytes still in
    flight are never hashed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hashed = 0
        self._target = 0
        self._final: int | None = None
        self._sha = hashlib.sha256()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name=f"hash:{path.name}", daemon=True)
        self._thread.start()

    def advance(self, offset: int) -> None:
        """The file is complete up to `offset` bytes."""
        with self._cond:
            if offset > self._target:
                self._target = offset
                self._cond.notify()

    def finish(self, size: int, timeout: float | None = None) -> str:
        """The file is complete at `size` bytes: hash the rest and return the digest."""
        with self._cond:
            self._final = size
            self._target = max(self._target, size)
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"hashing {self.path} did not finish in time")
        if self._error is not None:
            raise self._error
        if self._cancelled:
            raise Cancelled(str(self.path))
        return self._sha.hexdigest()

    def cancel(self) -> None:
        """Stop the thread (the download was paused or removed); the digest is lost."""
        with self._cond:
            self._cancelled = True
            self._cond.notify()
        self._thread.join(5)

    def _open(self) -> BinaryIO | None:
        """Open the file, waiting for aria2 to create it; None if cancelled first."""
        while True:
            try:
                return open(self.path, "rb", buffering=0)
            except FileNotFoundError:
                with self._cond:
                    if self._cancelled:
                        return None
                    if self._final is not None:
                        raise FileNotFoundError(f"{self.path} disappeared before it was verified") from None
                    self._cond.wait(0.05)

    def _run(self) -> None:
        try:
            fh = self._open()
            if fh is None:
                return
            with fh:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while True:
                    with self._cond:
                        while not self._cancelled and self.hashed >= self._target and self._final is None:
                            self._cond.wait()
                        if self._cancelled:
                            return
                        target, final = self._target, self._final
                    if self.hashed >= target and final is not None:
                        return
                    fh.seek(self.hashed)
                    n = fh.readinto(view[: min(CHUNK, target - self.hashed)])
                    if not n:
                        if final is not None:
                            return  # file shorter than promised: the size check reports it
                        with self._cond:
                            self._cond.wait(0.05)
                        continue
                    self._sha.update(view[:n])
                    self.hashed += n
        except OSError as e:
            self._error = e
