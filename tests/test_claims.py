"""downloader/claims.py on a real SQLite file: one pod per file, leases, and what happens to a dead pod's files.

Each "pod" here is its own Store (its own connections to the database file), as separate processes would have;
the clock is given, so a lease runs out without waiting for it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from downloader.claims import Claims, live_holders
from downloader.config import SECRET_STATE_FILES, Settings, service_file
from downloader.locks import check_sharing
from downloader.state import DownloadState, Store
from tests.conftest import plain_db

S = DownloadState
LEASE = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "state.db"
    with Store(path) as store:
        for i in range(3):
            store.upsert(f"f{i}", source=f"https://cdn.example/f{i}.bin", dest=f"loras/f{i}.safetensors")
    return path


def pods(db: Path, clock: Clock, *names: str) -> list[Claims]:
    return [Claims(Store(db), name, LEASE, clock) for name in names]


def test_two_pods_racing_for_the_same_files_win_each_file_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    ids = [f"f{i}" for i in range(150)]
    with Store(db) as store:
        for i in ids:
            store.upsert(i, source=f"https://cdn.example/{i}.bin", dest=f"loras/{i}.safetensors")
    won: dict[str, list[str]] = {"pod-a": [], "pod-b": []}
    start = threading.Barrier(2)

    def race(pod: str, order: list[str]) -> None:
        claims = Claims(Store(db), pod, LEASE)  # its own connections, as another process would have
        start.wait()
        for download_id in order:
            if claims.take(download_id) is not None:
                won[pod].append(download_id)

    threads = [threading.Thread(target=race, args=("pod-a", ids)),
               threading.Thread(target=race, args=("pod-b", list(reversed(ids))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not set(won["pod-a"]) & set(won["pod-b"]), "a file was won by both pods"
    assert sorted(won["pod-a"] + won["pod-b"]) == sorted(ids)
    assert won["pod-a"] and won["pod-b"], "both pods raced for real"
    with Store(db) as store:
        holders = live_holders(store)
    assert {i for i, p in holders.items() if p == "pod-a"} == set(won["pod-a"])


def test_a_live_claim_is_refused_and_an_expired_one_is_taken_over_naming_the_dead_pod(db: Path) -> None:
    clock = Clock()
    a, b = pods(db, clock, "pod-a", "pod-b")
    assert a.take("f0") is not None
    assert b.take("f0") is None  # live: pod-a's
    clock.now += LEASE / 2
    assert a.renew() == {"f0"}
    clock.now += LEASE - 1
    assert b.take("f0") is None  # renewed: still live
    clock.now += 2  # pod-a stopped renewing: its lease ran out
    taken = b.take("f0")
    assert taken is not None and taken.previous == "pod-a"
    assert a.renew() == set(), "pod-a learns that it lost the file"
    assert live_holders(b.store, clock.now) == {"f0": "pod-b"}
    b.release(["f0"])
    assert live_holders(b.store, clock.now) == {}
    assert a.take("f0") is not None and a.take("f0").previous is None  # free again; renewing ours names nobody


def test_a_dead_pods_downloading_file_is_queued_again_by_one_pod_with_an_event(db: Path) -> None:
    clock = Clock()
    a, b, c = pods(db, clock, "pod-a", "pod-b", "pod-c")
    assert a.take("f0") and a.take("f1")
    a.store.transition("f0", S.DOWNLOADING, "downloading")
    a.store.transition("f1", S.VERIFYING, "verifying")
    assert b.requeue_abandoned() == [] and c.requeue_unclaimed((), "interrupted") == []  # pod-a is alive
    assert a.store.get("f0").state == S.DOWNLOADING.value

    clock.now += LEASE + 1  # pod-a died
    assert sorted(b.requeue_abandoned()) == ["f0", "f1"]
    assert c.requeue_abandoned() == []  # already done by pod-b: once
    for download_id in ("f0", "f1"):
        assert b.store.get(download_id).state == S.QUEUED.value
        [event] = [e for e in b.store.events(download_id) if "pod-a" in e.message]
        assert event.level == "warning" and "stopped" in event.message
    assert live_holders(b.store, clock.now) == {}, "let go: whichever pod has a free slot resumes it"


def test_start_up_requeues_only_rows_no_live_pod_claims(db: Path) -> None:
    clock = Clock()
    a, b = pods(db, clock, "pod-a", "pod-b")
    assert a.take("f0")
    a.store.transition("f0", S.DOWNLOADING, "downloading")
    a.store.transition("f1", S.DOWNLOADING, "downloading")  # left mid-way by a crash before claims: nobody's
    assert b.requeue_unclaimed((), "interrupted: resuming") == ["f1"]
    assert b.store.get("f0").state == S.DOWNLOADING.value, "a live pod's file is never requeued"
    assert b.store.get("f1").state == S.QUEUED.value


def test_a_deleted_download_takes_its_claim_with_it(db: Path) -> None:
    clock = Clock()
    [a] = pods(db, clock, "pod-a")
    assert a.take("f2")
    a.store.delete("f2")
    assert live_holders(a.store, clock.now) == {}
    with plain_db(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_pods_have_ids_and_their_service_records_are_secret(tmp_path: Path) -> None:
    env = {"WORKSPACE": str(tmp_path)}
    first, second = Settings.from_env(env), Settings.from_env(env)
    assert first.pod_id != second.pod_id, "two pods on one host name are two pods"
    assert Settings.from_env({**env, "RUNPOD_POD_ID": "abc123"}).pod_id == "abc123"
    assert Settings.from_env({**env, "DOWNLOADER_CLAIM_LEASE": "3"}).claim_lease == 3.0
    assert Settings.from_env(env).claim_lease <= 30
    assert service_file("abc123") in SECRET_STATE_FILES and service_file("host/with:odd") in SECRET_STATE_FILES
    assert "aria2-abc123.log" not in SECRET_STATE_FILES


def test_a_local_disk_can_be_shared(tmp_path: Path) -> None:
    check = check_sharing(tmp_path / "state")
    assert check.ok and check.reason is None
    assert list((tmp_path / "state").iterdir()) == [], "the probe cleans up after itself"
