"""The state database's journal mode follows the filesystem of the state folder (WAL on a local disk, the rollback
journal on FUSE and network filesystems), and no process ever sees "database is locked" from another's lock.
The same on a real MooseFS: tests/test_moosefs.py."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from downloader import fsinfo, sqlite_setup
from downloader.state import Store
from tests.state_hammer import run_hammers


def pragma(store: Store, name: str) -> object:
    conn = store.engine.raw_connection()
    try:
        return conn.cursor().execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def test_a_local_folder_is_not_shared_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    kind = fsinfo.filesystem_of(tmp_path)
    assert not kind.shared and kind.magic not in fsinfo.SHARED_FILESYSTEMS
    if Path("/dev/shm").is_dir():
        assert fsinfo.filesystem_of(Path("/dev/shm")).name == "tmpfs"
    with pytest.raises(FileNotFoundError):
        fsinfo.filesystem_of(tmp_path / "missing")


def test_a_state_folder_on_a_local_disk_gets_wal(tmp_path: Path) -> None:
    with Store(tmp_path / "state" / "state.db") as store:
        store.upsert("m", source="https://example.invalid/m", dest="loras/m.safetensors")
        assert (pragma(store, "journal_mode"), pragma(store, "synchronous")) == ("wal", 1)  # 1: NORMAL


@pytest.mark.parametrize("magic", [0x65735546, 0x6969, 0xFF534D42], ids=["fuse-moosefs", "nfs", "cifs"])
def test_a_state_folder_on_a_network_filesystem_gets_the_synced_rollback_journal(tmp_path, monkeypatch, magic):
    monkeypatch.setattr(fsinfo, "_statfs_type", lambda path: magic)
    with Store(tmp_path / "state.db") as store:
        store.upsert("m", source="https://example.invalid/m", dest="loras/m.safetensors")
        assert (pragma(store, "journal_mode"), pragma(store, "synchronous")) == ("delete", 2)  # 2: FULL
        assert [r.id for r in store.downloads()] == ["m"]


def test_on_a_network_filesystem_each_transaction_holds_the_volume_lock_and_leaves_no_file_open(tmp_path, monkeypatch):
    monkeypatch.setattr(fsinfo, "_statfs_type", lambda path: 0x65735546)  # fuse, as on a RunPod network volume
    with Store(tmp_path / "state.db") as store:
        store.upsert("m", source="https://example.invalid/m", dest="loras/m.safetensors")
        with open(tmp_path / "state.db-lock") as other_process:
            with store.session() as s:
                s.execute(text("SELECT 1"))
                with pytest.raises(BlockingIOError):
                    fcntl.flock(other_process, fcntl.LOCK_EX | fcntl.LOCK_NB)
                assert store.get("m") is not None, "a nested transaction in the same thread does not wait for itself"
            fcntl.flock(other_process, fcntl.LOCK_EX | fcntl.LOCK_NB)  # let go once the transaction is over
            fcntl.flock(other_process, fcntl.LOCK_UN)
        assert store.rows()[0]["id"] == "m"
        open_files = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()]
        assert not [f for f in open_files if f.startswith(str(tmp_path))], "no connection kept open"


def test_a_filesystem_that_cannot_be_told_gets_the_rollback_journal(tmp_path, monkeypatch, caplog):
    def broken(path: Path) -> int:
        raise OSError(38, "Function not implemented", str(path))

    monkeypatch.setattr(fsinfo, "_statfs_type", broken)
    with caplog.at_level(logging.WARNING), Store(tmp_path / "state.db") as store:
        assert pragma(store, "journal_mode") == "delete"
    assert "cannot tell which filesystem" in caplog.text


def test_two_processes_hammering_one_local_db_see_every_row_and_never_a_lock(tmp_path: Path) -> None:
    db = tmp_path / "state" / "state.db"
    results = run_hammers([db, db], count=150, go_file=tmp_path / "go")
    for result in results:
        assert result["journal_mode"] == "wal" and result["integrity"] == "ok"
        assert len(result["done"]) == 300 and result["events"] == 300 * 4


def test_a_lock_held_longer_than_the_busy_timeout_is_waited_out_not_raised(tmp_path, monkeypatch, caplog):
    """Another process holds the database for longer than SQLite's busy timeout (made short here): the write
    waits (and says so in the log) instead of raising "database is locked", and lands once the lock is gone."""
    monkeypatch.setattr(sqlite_setup, "BUSY_TIMEOUT_SECONDS", 0.05)
    db = tmp_path / "state.db"
    with Store(db) as store:
        store.upsert("first", source="https://example.invalid/1", dest="loras/1.safetensors")
        other = sqlite3.connect(db, isolation_level=None)  # another process's plain connection
        other.execute("BEGIN EXCLUSIVE")
        errors: list[BaseException] = []

        def write() -> None:
            try:
                store.upsert("second", source="https://example.invalid/2", dest="loras/2.safetensors")
            except BaseException as e:  # noqa: BLE001 - the test reports whatever reached the caller
                errors.append(e)

        with caplog.at_level(logging.WARNING, logger="downloader.sqlite_setup"):
            writer = threading.Thread(target=write)
            writer.start()
            try:
                # The writer has met the lock (past SQLite's own wait) once it says it is waiting for it.
                deadline = time.monotonic() + 30
                while "locked by another process" not in caplog.text:
                    assert time.monotonic() < deadline and writer.is_alive(), f"no wait logged; raised: {errors}"
                    time.sleep(0.02)
                assert writer.is_alive(), "the write must wait for the lock, not give up"
            finally:
                other.execute("COMMIT")
                other.close()
                writer.join(30)
        assert errors == []
        assert [r.id for r in store.downloads()] == ["first", "second"]
