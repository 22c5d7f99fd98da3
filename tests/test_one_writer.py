"""One writer of download states (issue #11): the service's loop applies every change, a transition is checked in
the UPDATE that writes it, a destination belongs to one download, and `verify` re-hashes files through the loop.
Real aria2c, real SQLite, a loopback CDN."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from downloader.manifest import ModelSpec
from downloader.service import Conflict, DownloadService, NotFound
from downloader.state import DownloadState, IllegalTransition, Store
from tests.conftest import wait_for, wait_service_started

S = DownloadState
DEST = "loras/contested.safetensors"



@pytest.fixture
def svc(settings) -> Iterator[DownloadService]:
    service = DownloadService(settings)
    service.start()
    wait_service_started(service)
    yield service
    service.stop()


def settled(svc: DownloadService, *ids: str) -> bool:
    rows = {r.id: r.state for r in svc.downloads()}
    return all(rows.get(i) in (S.DONE.value, S.FAILED.value) for i in ids)


# --- unique destinations ----------------------------------------------------------------------------------


def test_concurrent_adds_of_one_destination_one_wins_the_rest_conflict(svc, settings, cdn, make_blob):
    blobs = [make_blob(256 << 10) for _ in range(6)]
    for n, blob in enumerate(blobs):
        cdn.add_file(f"/w{n}.bin", blob.path)
    start = threading.Barrier(len(blobs))
    outcomes: dict[str, object] = {}

    def add(n: int) -> None:
        spec = ModelSpec(id=f"w{n}", source=f"{cdn.url}/w{n}.bin", dest=DEST, sha256=blobs[n].sha256)
        start.wait()
        try:
            outcomes[spec.id] = svc.add(spec)
        except Exception as e:  # noqa: BLE001 - what each caller got is what the test checks
            outcomes[spec.id] = e

    threads = [threading.Thread(target=add, args=(n,)) for n in range(len(blobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [i for i, o in outcomes.items() if o == i]
    assert len(winners) == 1, outcomes
    winner = winners[0]
    losers = {i: o for i, o in outcomes.items() if i != winner}
    assert len(losers) == len(blobs) - 1 and all(isinstance(o, Conflict) for o in losers.values()), outcomes
    for error in losers.values():
        assert DEST in str(error) and winner in str(error), f"the message names the dest and its download: {error}"
    assert [(r.id, r.dest) for r in svc.downloads()] == [(winner, DEST)]
    wait_for(lambda: settled(svc, winner), "the winner to finish")
    assert svc.get(winner).state == S.DONE.value
    assert (settings.models_dir / DEST).read_bytes() == blobs[int(winner[1:])].data


def test_the_database_refuses_a_second_row_for_one_dest(tmp_path):
    with Store(tmp_path / "state.db") as one, Store(tmp_path / "state.db") as other:
        one.upsert("first", source="https://example.invalid/a", dest=DEST)
        from sqlalchemy.exc import IntegrityError

        with pytest.raises(IntegrityError):
            other.upsert("second", source="https://example.invalid/b", dest=DEST)
        assert [r.id for r in one.downloads()] == ["first"]


def test_an_old_database_with_duplicate_dests_keeps_the_done_one(tmp_path):
    db = tmp_path / "state.db"
    with Store(db) as store:  # as an older version left it: no unique index, two rows for one file
        store.engine.dispose()
    con = sqlite3.connect(db)
    con.execute("DROP INDEX ux_downloads_dest")
    for download_id, state, when in (("old-failed", "failed", "2024-01-02"), ("kept", "done", "2024-01-01"),
                                     ("other-queued", "queued", "2024-01-03")):
        con.execute(
            "INSERT INTO downloads (id, source, dest, state, required, bytes_done, speed, attempts, verified,"
            " created_at, updated_at) VALUES (?, 'https://example.invalid/x', ?, ?, 1, 0, 0, 0, 0, ?, ?)",
            (download_id, DEST, state, when, when),
        )
    con.execute("INSERT INTO downloads (id, source, dest, state, required, bytes_done, speed, attempts, verified,"
                " created_at, updated_at) VALUES ('alone', 's', 'vae/v.safetensors', 'queued', 1, 0, 0, 0, 0, "
                "'2024-01-01', '2024-01-01')")
    con.commit()
    con.close()
    with Store(db) as store:
        assert sorted(r.id for r in store.downloads()) == ["alone", "kept"]
        assert "removed old-failed, other-queued: same destination" in store.events("kept")[0].message
        with pytest.raises(Exception, match="UNIQUE"):
            store.upsert("again", source="https://example.invalid/y", dest=DEST)


# --- transitions checked where they are written -----------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store(tmp_path / "state.db") as s:
        s.upsert("m", source="https://example.invalid/m", dest=DEST, size=100)
        yield s


def snapshot(store: Store) -> tuple[dict, list[str]]:
    return store.get("m").as_dict(), [e.message for e in store.events("m")]


def test_a_row_moved_by_another_writer_meanwhile_makes_the_transition_refused(store, tmp_path):
    other = Store(tmp_path / "state.db")  # another process's connection
    armed = [True]

    @event.listens_for(store.engine, "before_cursor_execute")
    def move_first(conn, cursor, statement, *args):  # between the state read and the UPDATE that writes
        if armed[0] and statement.startswith("UPDATE downloads"):
            armed[0] = False
            other.transition("m", S.PAUSED, "paused by the other writer", bytes_done=7)

    try:
        with pytest.raises(IllegalTransition, match="m: queued -> downloading refused: the download moved to paused"):
            store.transition("m", S.DOWNLOADING, "must not be recorded", bytes_done=55, error="nope")
    finally:
        event.remove(store.engine, "before_cursor_execute", move_first)
        other.close()
    row, events = snapshot(store)
    assert (row["state"], row["bytes_done"], row["error"], row["started_at"]) == ("paused", 7, None, None)
    assert events == ["paused by the other writer", "added"], "no event of the refused move"


def test_a_transition_expecting_another_state_is_refused_and_changes_nothing(store):
    store.transition("m", S.PAUSED, "paused")
    before = snapshot(store)
    with pytest.raises(IllegalTransition, match="m: queued -> downloading refused: it is paused now"):
        store.transition("m", S.DOWNLOADING, "stale", expect=S.QUEUED, bytes_done=9)
    assert snapshot(store) == before


# --- verify through the loop ---------------------------------------------------------------------------------


def test_verify_through_the_loop_keeps_a_good_file_and_moves_a_bad_one_aside(svc, settings, cdn, make_blob):
    good, bad = make_blob(3 << 20), make_blob(3 << 20)
    cdn.add_file("/good.bin", good.path)
    cdn.add_file("/bad.bin", bad.path)
    for name, blob in (("good", good), ("bad", bad)):
        svc.add(ModelSpec(id=name, source=f"{cdn.url}/{name}.bin", dest=f"loras/{name}.safetensors", sha256=blob.sha256))
    wait_for(lambda: settled(svc, "good", "bad"), "both downloads")
    bad_path = settings.models_dir / "loras/bad.safetensors"
    with open(bad_path, "r+b") as fh:  # bit rot: same size, one byte different
        fh.seek(1 << 20)
        byte = fh.read(1)
        fh.seek(1 << 20)
        fh.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(NotFound):
        svc.verify(["good", "nope"])
    assert svc.get("good").state == S.DONE.value, "an unknown id changes nothing"
    assert svc.verify(None) == ["good", "bad"]
    wait_for(lambda: settled(svc, "good", "bad"), "both files verified again")

    good_row, bad_row = svc.get("good"), svc.get("bad")
    assert good_row.state == "done" and good_row.verified and good_row.bytes_done == good.size
    assert "sha256 verified again" in [e.message for e in svc.store.events("good")]
    assert "verifying again" in [e.message for e in svc.store.events("good")], "it showed verifying meanwhile"
    assert (settings.models_dir / "loras/good.safetensors").read_bytes() == good.data
    assert bad_row.state == "failed"
    assert bad_row.error.startswith(f"checksum mismatch: expected {bad.sha256}, got ")
    assert not bad_path.exists(), "ComfyUI must not keep loading a corrupt file"
    [moved] = list(bad_path.parent.glob("bad.safetensors.corrupt-*"))
    assert f"moved to {moved.name}" in bad_row.error

    (settings.models_dir / "loras/good.safetensors").unlink()
    assert svc.verify(["good"]) == ["good"]
    wait_for(lambda: settled(svc, "good"), "the missing file verified")
    assert svc.get("good").state == "failed" and svc.get("good").error.endswith("good.safetensors is missing")
    assert svc.verify(["bad"]) == [], "only files in place (done) are verified"


def test_a_request_to_a_service_that_does_not_run_says_so(settings):
    from downloader.service import EngineUnavailable

    service = DownloadService(settings)
    try:
        assert service.health() == (False, "not started")
        with pytest.raises(EngineUnavailable, match="not running"):
            service.bulk("pause")
    finally:
        service.stop()
    assert Path(settings.db_path).exists()
