"""downloader/verify.py: aria2's bitfield to a completed prefix, the hasher that follows it, and the hash task."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from downloader.verify import (
    Cancelled,
    HashTask,
    PrefixHasher,
    completed_prefix,
    sha256_file,
)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- completed_prefix: the bitfield is hex, most significant bit = piece 0, padded with zeros to whole bytes ------
@pytest.mark.parametrize(
    "bitfield,piece,total,expected",
    [
        pytest.param(None, 10, 80, 0, id="no bitfield yet"),
        pytest.param("", 10, 80, 0, id="empty bitfield"),
        pytest.param("00", 10, 80, 0, id="nothing"),
        pytest.param("ff", 10, 80, 80, id="everything"),
        pytest.param("ffff", 10, 160, 160, id="everything, two bytes"),
        pytest.param("f0", 10, 80, 40, id="the first four pieces"),
        pytest.param("80", 10, 80, 10, id="the first piece"),
        pytest.param("e0", 10, 80, 30, id="three pieces: a nibble's leading ones"),
        pytest.param("c0", 10, 80, 20, id="two pieces"),
        pytest.param("cf", 10, 80, 20, id="a gap after the first two pieces: the rest does not count"),
        pytest.param("f7", 10, 80, 40, id="a gap at the fifth piece"),
        pytest.param("fe", 10, 80, 70, id="all but the last"),
        pytest.param("7f", 10, 80, 0, id="all but the first"),
        pytest.param("0f", 10, 80, 0, id="only later pieces"),
        pytest.param("ff80", 10, 90, 90, id="nine pieces of ten bytes"),
        pytest.param("ff80", 10, 85, 85, id="a short last piece: never past the total"),
        pytest.param("f8", 10, 45, 45, id="five pieces, padding bits zero, total not a multiple"),
        pytest.param("f0", 10, 45, 40, id="a short last piece still missing"),
        pytest.param("FF", 10, 80, 80, id="upper-case hex"),
        pytest.param("ff", 1 << 20, (8 << 20) - 1, (8 << 20) - 1, id="MiB pieces"),
        pytest.param("ff", 0, 80, 0, id="no piece length"),
        pytest.param("ff", 10, 0, 0, id="no total"),
    ],
)
def test_completed_prefix(bitfield: str | None, piece: int, total: int, expected: int) -> None:
    assert completed_prefix(bitfield, piece, total) == expected


# --- PrefixHasher -----------------------------------------------------------------------------------------------
def test_prefix_hasher_on_a_short_file_equals_hashlib(tmp_path: Path) -> None:
    data = os.urandom(1000)
    path = tmp_path / "f.part"
    path.write_bytes(data)
    h = PrefixHasher(path)
    assert h.finish(len(data), timeout=30) == digest(data)
    assert h.hashed == len(data)


def test_prefix_hasher_reads_only_up_to_the_target(tmp_path: Path) -> None:
    """Bytes past the completed prefix may still be rewritten: they are not read before they are promised."""
    path = tmp_path / "f.part"
    path.write_bytes(b"a" * 500 + b"x" * 500)  # the x's are still in flight
    h = PrefixHasher(path)
    h.advance(500)
    wait_for(lambda: h.hashed >= 500, "the first 500 bytes")
    assert h.hashed == 500
    with open(path, "r+b") as fh:
        fh.seek(500)
        fh.write(b"b" * 500)  # what the download really wrote there
    assert h.finish(1000, timeout=30) == digest(b"a" * 500 + b"b" * 500)


def test_prefix_hasher_follows_a_growing_file_across_chunks(tmp_path: Path) -> None:
    from downloader import verify

    parts = [os.urandom(verify.CHUNK + 12345), os.urandom(777), os.urandom(verify.CHUNK // 2)]
    path = tmp_path / "big.part"
    h = PrefixHasher(path)  # before the file exists: it waits for aria2 to create it
    written = 0
    for part in parts:
        with open(path, "ab") as fh:
            fh.write(part)
        written += len(part)
        h.advance(written)
        wait_for(lambda n=written: h.hashed == n, f"{written} bytes hashed")
    assert h.finish(written, timeout=30) == digest(b"".join(parts))


def test_prefix_hasher_when_the_prefix_shrinks_because_the_download_restarted(tmp_path: Path) -> None:
    """aria2 started the file again from zero (the same bytes): the target never goes back, nothing is hashed twice."""
    data = os.urandom(4000)
    path = tmp_path / "f.part"
    path.write_bytes(data[:3000])
    h = PrefixHasher(path)
    h.advance(3000)
    wait_for(lambda: h.hashed == 3000, "3000 bytes")
    path.write_bytes(b"")  # restarted from zero
    h.advance(0)
    h.advance(1000)  # smaller than before: ignored
    path.write_bytes(data[:2000])
    h.advance(2000)
    assert h.hashed == 3000
    path.write_bytes(data)  # the download finishes
    h.advance(4000)
    assert h.finish(4000, timeout=30) == digest(data) == sha256_file(path)


def test_prefix_hasher_finish_on_a_file_shorter_than_promised_returns(tmp_path: Path) -> None:
    """The size check reports a short file; the hasher must not wait for bytes that never come."""
    path = tmp_path / "f.part"
    path.write_bytes(b"abc")
    assert PrefixHasher(path).finish(10, timeout=30) == digest(b"abc")


def test_prefix_hasher_reports_a_file_that_never_appeared(tmp_path: Path) -> None:
    h = PrefixHasher(tmp_path / "never.part")
    with pytest.raises(FileNotFoundError, match="disappeared before it was verified"):
        h.finish(10, timeout=30)


@pytest.mark.parametrize("exists", [True, False], ids=["reading", "waiting for the file"])
def test_prefix_hasher_cancel(tmp_path: Path, exists: bool) -> None:
    path = tmp_path / "f.part"
    if exists:
        path.write_bytes(os.urandom(2000))
    h = PrefixHasher(path)
    if exists:
        h.advance(1000)
        wait_for(lambda: h.hashed == 1000, "1000 bytes")
    h.cancel()
    assert not h._thread.is_alive(), "cancel stops the thread"
    if not exists:
        path.write_bytes(os.urandom(2000))  # appears too late: nobody reads it
    with pytest.raises(Cancelled):
        h.finish(2000, timeout=30)
    assert h.hashed == (1000 if exists else 0)


def test_prefix_hasher_reports_a_read_error(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.part"  # opens, but reading it fails (EISDIR)
    folder.mkdir()
    h = PrefixHasher(folder)
    h.advance(10)
    with pytest.raises(IsADirectoryError):
        h.finish(10, timeout=30)


# --- HashTask ---------------------------------------------------------------------------------------------------
def test_hash_task_full_pass(tmp_path: Path) -> None:
    from downloader import verify

    data = os.urandom(verify.CHUNK * 2 + 99)
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    done = threading.Event()
    task = HashTask(path, on_done=done.set)
    assert done.wait(60), "on_done is called when the hash ends"
    wait_for(lambda: task.finished, "the thread to end")
    assert task.error is None and task.digest == digest(data)
    assert task.progress == len(data) and task.full_pass


def test_hash_task_reports_progress_and_stops_when_cancelled(tmp_path: Path) -> None:
    """A FIFO hands out the bytes one write at a time, so progress and cancel are seen at known points."""
    fifo = tmp_path / "slow.bin"
    os.mkfifo(fifo)
    done = threading.Event()
    task = HashTask(fifo, on_done=done.set)
    with open(fifo, "wb", buffering=0) as writer:
        writer.write(b"x" * 1000)
        wait_for(lambda: task.progress == 1000, "progress after the first 1000 bytes")
        writer.write(b"y" * 1000)
        wait_for(lambda: task.progress == 2000, "progress after 2000 bytes")
        task.cancel()
        writer.write(b"z" * 1000)  # read, then the cancel is noticed before hashing it
        assert done.wait(30)
    assert isinstance(task.error, Cancelled) and task.digest is None and task.progress == 2000


def test_hash_task_follows_its_prefix_hasher(tmp_path: Path) -> None:
    data = os.urandom(5000)
    path = tmp_path / "f.part"
    path.write_bytes(data)
    hasher = PrefixHasher(path)
    hasher.advance(3000)
    wait_for(lambda: hasher.hashed == 3000, "the prefix")
    done = threading.Event()
    task = HashTask(path, hasher, len(data), on_done=done.set)
    assert not task.full_pass
    assert done.wait(30)
    assert task.error is None and task.digest == digest(data) and task.progress == len(data) == hasher.hashed


def test_hash_task_error_on_a_missing_file(tmp_path: Path) -> None:
    done = threading.Event()
    task = HashTask(tmp_path / "gone.safetensors", on_done=done.set)
    assert done.wait(30), "on_done is called after an error too"
    wait_for(lambda: task.finished, "the thread to end")
    assert isinstance(task.error, FileNotFoundError) and task.digest is None and task.progress == 0


def test_hash_task_cancel_reaches_its_prefix_hasher(tmp_path: Path) -> None:
    path = tmp_path / "f.part"
    path.write_bytes(b"x" * 100)
    hasher = PrefixHasher(path)
    hasher.cancel()
    task = HashTask(path, hasher, 100)
    wait_for(lambda: task.finished, "the task")
    assert isinstance(task.error, Cancelled) and task.digest is None
