"""The download state machine (downloader/state.py): every move in TRANSITIONS works through Store.transition on
a real SQLite file, and every other move is refused without touching the row, its fields or its history."""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

import pytest

from downloader.state import (
    TERMINAL_STATES,
    TRANSITIONS,
    DownloadState,
    IllegalTransition,
    Store,
)

S = DownloadState
ALLOWED = [(old, new) for old, targets in TRANSITIONS.items() for new in sorted(targets, key=list(S).index)]
REFUSED = [(old, new) for old, new in product(S, S) if new != old and new not in TRANSITIONS[old]]


def _id(pair: tuple[DownloadState, DownloadState]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store(tmp_path / "state" / "state.db") as s:
        yield s


def row_in(store: Store, state: DownloadState) -> str:
    """A download in `state`, reached by a legal move from queued (where every download starts)."""
    store.upsert("m", source="https://example.invalid/m.bin", dest="loras/m.safetensors", size=100, bytes_done=0)
    assert store.get("m").state == S.QUEUED.value
    if state != S.QUEUED:
        assert state in TRANSITIONS[S.QUEUED]
        store.transition("m", state, f"set up: {state.value}", bytes_done=40, speed=7, error="earlier error")
    return "m"


def history(store: Store, download_id: str) -> list[tuple[int, str, str]]:
    return [(e.id, e.level, e.message) for e in store.events(download_id)]


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(S)
    assert all(targets <= set(S) for targets in TRANSITIONS.values())
    assert len(ALLOWED) + len(REFUSED) + len(S) == len(S) ** 2


@pytest.mark.parametrize("old,new", ALLOWED, ids=[_id(p) for p in ALLOWED])
def test_every_allowed_transition_succeeds(store: Store, old: DownloadState, new: DownloadState) -> None:
    download_id = row_in(store, old)
    before = store.get(download_id).as_dict()
    events_before = history(store, download_id)
    row = store.transition(download_id, new, f"moved to {new.value}", level="warning", error="why", bytes_done=55)
    after = store.get(download_id)
    assert row.state == after.state == new.value
    assert (after.error, after.bytes_done) == ("why", 55), "the fields given with the move are stored"
    events = history(store, download_id)
    assert events[1:] == events_before and events[0][1:] == ("warning", f"moved to {new.value}")
    if new == S.DOWNLOADING:
        assert after.started_at is not None
    if new in TERMINAL_STATES:
        assert after.finished_at is not None and after.speed == 0
    else:
        assert after.as_dict()["finished_at"] == before["finished_at"], "only an end sets the end time"
    assert after.as_dict()["created_at"] == before["created_at"]


@pytest.mark.parametrize("old,new", REFUSED, ids=[_id(p) for p in REFUSED])
def test_every_refused_transition_raises_and_changes_nothing(store: Store, old: DownloadState, new: DownloadState) -> None:
    download_id = row_in(store, old)
    before = store.get(download_id).as_dict()
    events_before = history(store, download_id)
    with pytest.raises(IllegalTransition, match=f"m: {old.value} -> {new.value}"):
        store.transition(download_id, new, "must not be recorded", error="must not be stored", bytes_done=99)
    assert store.get(download_id).as_dict() == before
    assert history(store, download_id) == events_before


@pytest.mark.parametrize("state", list(S), ids=[s.value for s in S])
def test_staying_in_the_same_state_is_allowed_and_recorded(store: Store, state: DownloadState) -> None:
    download_id = row_in(store, state)
    store.transition(download_id, state, "again", error="new reason")
    after = store.get(download_id)
    assert after.state == state.value and after.error == "new reason"
    assert history(store, download_id)[0][2] == "again"


def test_a_message_defaults_to_the_state_and_started_at_is_the_first_start(store: Store) -> None:
    download_id = row_in(store, S.QUEUED)
    store.transition(download_id, S.DOWNLOADING)
    first = store.get(download_id).started_at
    assert history(store, download_id)[0][1:] == ("info", "downloading")
    store.transition(download_id, S.QUEUED)
    store.transition(download_id, S.DOWNLOADING)
    assert store.get(download_id).started_at == first, "a resumed download keeps its first start time"


def test_an_unknown_download_raises_key_error(store: Store) -> None:
    with pytest.raises(KeyError):
        store.transition("nope", S.DOWNLOADING)
    assert store.events() == []


def test_a_database_of_an_older_version_gets_the_new_columns_and_keeps_its_rows(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    with Store(path) as store:
        store.upsert("old", source="https://example.invalid/a", dest="loras/a.safetensors", size=5)
    with sqlite3.connect(path) as conn:  # as a version before size pins were stored made it
        conn.execute("ALTER TABLE downloads DROP COLUMN size_origin")
    with Store(path) as store:
        row = store.get("old")
        assert row is not None and row.size == 5 and row.size_origin is None
        store.update("old", size_origin="manifest")
        assert store.get("old").size_origin == "manifest"
