"""Many pods, one network volume: a real MooseFS mounted twice (tests/moosefs.py), as two RunPod pods see one
volume. The fixture itself (what the downloader relies on: coherent reads, flock, atomic rename), then the state
database on it: the rollback journal, and two pods writing at once without losing a row or seeing "locked"."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from downloader.fsinfo import filesystem_of
from downloader.state import Store
from tests.moosefs import MooseFS
from tests.state_hammer import run_hammers


def test_the_volume_is_a_shared_fuse_filesystem_on_both_mounts(moosefs: MooseFS) -> None:
    print(f"MooseFS fixture started in {moosefs.startup_seconds:.2f} s")
    for mount in (moosefs.mount_a, moosefs.mount_b):
        kind = filesystem_of(mount)
        assert (kind.name, kind.shared) == ("fuse", True)
        assert os.path.ismount(mount)
    assert moosefs.mount_a.stat().st_dev != moosefs.mount_b.stat().st_dev, "two mounts, not one seen twice"


def test_a_file_written_through_one_mount_reads_back_byte_for_byte_through_the_other(moosefs: MooseFS) -> None:
    folder = moosefs.folder("bytes")
    data = os.urandom(3 * (1 << 20) + 12345)  # several MooseFS blocks, not a multiple of one
    with open(folder / "model.bin", "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    assert moosefs.on_b(folder / "model.bin").read_bytes() == data
    # and back: B appends, A sees it
    with open(moosefs.on_b(folder / "model.bin"), "ab") as fh:
        fh.write(b"tail")
    assert (folder / "model.bin").read_bytes() == data + b"tail"


def test_an_flock_on_one_mount_blocks_a_second_one_on_the_other_until_released(moosefs: MooseFS) -> None:
    folder = moosefs.folder("flock")
    (folder / "owner.lock").write_text("")
    with open(folder / "owner.lock") as a, open(moosefs.on_b(folder / "owner.lock")) as b:
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(a, fcntl.LOCK_UN)
        take_within(b, 10, "B never got the lock that A released")
        with pytest.raises(BlockingIOError):
            fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)


def take_within(fh, seconds: float, why: str) -> None:
    """flock `fh` once the holder on the other mount has let go: the release reaches the master a moment later."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            assert time.monotonic() < deadline, why
            time.sleep(0.02)


def test_os_replace_is_atomic_for_a_reader_on_the_other_mount(moosefs: MooseFS) -> None:
    """Placing a file is write `.part`, fsync, rename: a pod reading the name meanwhile sees a whole old or a whole
    new file, never a missing or partial one."""
    folder = moosefs.folder("replace")
    rounds = 40
    versions = [os.urandom(300_000) for _ in range(4)]
    digests = {hashlib.sha256(v).hexdigest(): i for i, v in enumerate(versions)}
    (folder / "model.bin").write_bytes(versions[0])
    target_b = moosefs.on_b(folder / "model.bin")
    seen: list[str] = []
    problems: list[str] = []
    writing = threading.Event()
    writing.set()

    def read_on_b() -> None:
        while writing.is_set() or not seen:
            try:
                seen.append(hashlib.sha256(target_b.read_bytes()).hexdigest())
            except OSError as e:
                problems.append(repr(e))

    reader = threading.Thread(target=read_on_b)
    reader.start()
    try:
        for round_ in range(rounds):
            part = folder / "model.bin.part"
            with open(part, "wb") as fh:
                fh.write(versions[round_ % len(versions)])
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(part, folder / "model.bin")
    finally:
        writing.clear()
        reader.join(30)
    assert problems == [], "the name was missing or unreadable during a rename"
    assert seen and all(d in digests for d in seen), "a reader saw a file that is none of the versions written"
    deadline = time.monotonic() + 10
    last = versions[(rounds - 1) % len(versions)]
    while target_b.read_bytes() != last:
        assert time.monotonic() < deadline, "B does not see the last version"
        time.sleep(0.05)
    assert not moosefs.on_b(folder / "model.bin.part").exists()


def test_two_pods_write_the_state_db_at_once_on_the_rollback_journal(moosefs: MooseFS) -> None:
    """One process per mount adds and moves 60 downloads each at the same time: both see all 120 done, the journal
    is the rollback one, the database is intact, and neither ever raised (no "database is locked")."""
    folder = moosefs.folder("state")
    db_a = folder / ".downloader" / "state.db"
    results = run_hammers([db_a, moosefs.on_b(db_a)], count=60, go_file=folder / "go")
    for result in results:
        assert result["journal_mode"] == "delete"
        assert result["integrity"] == "ok"
        assert len(result["done"]) == 120 and result["events"] == 120 * 4
    assert results[0]["done"] == results[1]["done"]
    assert not list(db_a.parent.glob("state.db-wal")), "no WAL file on a network volume"


def test_a_transaction_on_the_volume_holds_the_volume_lock_and_then_closes_the_file(moosefs: MooseFS) -> None:
    """MooseFS tells another mount's open files of a change only a moment later, so a pod never keeps the state
    database open between transactions: each one takes the lock file (seen taken through the other mount), opens
    the database afresh, and closes it before letting go."""
    folder = moosefs.folder("volume-lock")
    db = folder / "state.db"
    with Store(db) as store:
        store.upsert("m", source="https://example.invalid/m", dest="loras/m.safetensors")
        with open(moosefs.on_b(folder / "state.db-lock")) as other_pod:
            with store.session() as s:
                assert s.get(type(store.get("m")), "m") is not None
                with pytest.raises(BlockingIOError):
                    fcntl.flock(other_pod, fcntl.LOCK_EX | fcntl.LOCK_NB)
            take_within(other_pod, 10, "the volume lock was not let go after the transaction")
            fcntl.flock(other_pod, fcntl.LOCK_UN)
        assert open_files_under(folder) == [], "the database must not stay open between transactions"


def open_files_under(folder) -> list[str]:
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_a_state_db_left_in_wal_mode_on_the_volume_is_switched_to_the_rollback_journal(moosefs: MooseFS) -> None:
    """An earlier version made the state database in WAL mode on the volume: opened now, it keeps its rows and
    leaves WAL, so the next pod that opens it sees them."""
    import sqlite3

    folder = moosefs.folder("old-wal")
    db = folder / "state.db"
    with Store(db) as store:
        store.upsert("kept", source="https://example.invalid/k", dest="loras/k.safetensors")
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.close()
    with Store(moosefs.on_b(db)) as store:
        assert [r.id for r in store.downloads()] == ["kept"]
        store.upsert("added-by-b", source="https://example.invalid/b", dest="loras/b.safetensors")
    with Store(db) as store:
        assert [r.id for r in store.downloads()] == ["kept", "added-by-b"]
    con = sqlite3.connect(moosefs.on_b(db))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()

