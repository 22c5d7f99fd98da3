"""Many pods, one workspace (issue #12): every file downloaded by exactly one pod, pods working side by side, and a
pod that dies mid-file taken over by another that resumes it.

Two pods are two DownloadServices with different pod ids in this process, or two `downloader serve` processes
(RUNPOD_POD_ID tells them apart) on one state folder, each with its own aria2c; the loopback CDN of tests/servers.py
counts the bytes it sends. Each test runs on a local tmp workspace and on a real MooseFS (what RunPod network
volumes are: tests/moosefs.py) mounted twice, pod A through one mount and pod B through the other, at different
paths: what the pods share in the state database must not depend on where the volume is mounted.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from downloader.claims import live_holders
from downloader.cli.client import find_service
from downloader.config import Settings
from downloader.service import DownloadService
from downloader.state import Store
from tests import conftest
from tests.conftest import (
    Blob,
    plain_db,
    service_process,
    test_settings,
    wait_service_started,
)
from tests.servers import FileServer
from web import create_app
from web.auth import AuthConfig
from web.downloads import snapshot

PASSWORD = "fleet-test-pw"
BEARER = {"Authorization": f"Bearer {PASSWORD}"}
LEASE = 2.0  # seconds: a dead pod's files move on within a test's patience


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    """conftest's wait, with the patience two pods on a loaded machine need."""
    return conftest.wait_for(condition, what, timeout=90.0)


def write_manifest(settings: Settings, cdn: FileServer, blobs: dict[str, Blob], presets: dict[str, list[str]]) -> None:
    """A manifest in $WORKSPACE/manifests, which every pod's service loads."""
    folder = settings.workspace / "manifests"
    folder.mkdir(exist_ok=True)
    lines = ["presets:"] + [f"  {name}: [{', '.join(ids)}]" for name, ids in presets.items()] + ["models:"]
    for model_id, blob in blobs.items():
        cdn.add_file(f"/{model_id}.bin", blob.path)
        lines += [f"  - id: {model_id}", f"    source: {cdn.url}/{model_id}.bin",
                  f"    dest: loras/{model_id}.safetensors", f"    sha256: {blob.sha256}", f"    size: {blob.size}"]
    (folder / "fleet.yaml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def settings_b(request: pytest.FixtureRequest, workspace: Path) -> Settings:
    """Pod B's settings for the shared workspace: the same folder on a local disk; on MooseFS, the same folder
    through the second mount (another path, as another pod mounts the volume)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("workspace") == "moosefs":
        return test_settings(request.getfixturevalue("moosefs").on_b(workspace))
    return test_settings(workspace)


def pod(settings: Settings, name: str) -> Settings:
    """One pod's settings on the shared workspace: one file at a time, one connection (so the CDN's byte count is
    what was downloaded, with no cut-off ranges), a short lease."""
    return settings.with_(pod_id=name, manifest_dirs=(settings.workspace / "manifests",), max_concurrent=1,
                          connections=1, claim_lease=LEASE)


@contextmanager
def services(*each: Settings) -> Iterator[list[DownloadService]]:
    with ExitStack() as stack:
        started = []
        for s in each:
            svc = DownloadService(s)
            stack.callback(svc.stop)
            svc.start()
            started.append(svc)
        for svc in started:
            wait_service_started(svc)
        yield started


def integrity(db: Path) -> str:
    with plain_db(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def fetched_by(store: Store, download_id: str) -> set[str]:
    """The pods that started downloading a file, as its history says."""
    return {e.message.split("pod ", 1)[1].split()[0] for e in store.events(download_id, limit=500)
            if e.message.startswith("downloading") and "pod " in e.message}


@pytest.mark.shared_volume  # also two mounts of a real MooseFS: two pods on one network volume
def test_two_pods_on_one_preset_fetch_every_file_once_and_both_report_done(settings, settings_b, make_blob):
    blobs = {f"m{i}": make_blob((2 << 20) + i) for i in range(6)}
    total = sum(b.size for b in blobs.values())
    with FileServer(rate_limit=2_000_000) as cdn:
        write_manifest(settings, cdn, blobs, {"p": list(blobs)})
        with services(pod(settings, "pod-a"), pod(settings_b, "pod-b")) as (a, b):
            assert a.shared and b.shared
            a.start_preset("p")
            b.start_preset("p")  # the same preset asked of the other pod: nothing twice
            holders_seen: set[str] = set()

            def settled() -> bool:
                holders_seen.update(live_holders(a.store).values())
                return a.wait_settled(list(blobs), 0.1)

            wait_for(settled, "every file to settle")
            assert cdn.wait_idle(30)
            sent = cdn.bytes_sent()
            for svc in (a, b):
                wait_for(lambda svc=svc: svc.summary()["counts"]["done"] == len(blobs), "both pods to count all done")
                assert not svc.missing()
            rows = {r.id: r for r in a.store.downloads()}
            fetchers = {i: fetched_by(a.store, i) for i in blobs}
    assert all(r.state == "done" and r.verified for r in rows.values()), rows
    for model_id, blob in blobs.items():
        assert (settings.models_dir / f"loras/{model_id}.safetensors").read_bytes() == blob.data
    assert total <= sent < total + (2 << 20), f"every file once: {sent} bytes sent for {total}"
    assert all(len(f) == 1 for f in fetchers.values()), fetchers
    assert holders_seen == {"pod-a", "pod-b"}, "both pods fetched files"
    assert integrity(settings.db_path) == "ok"


@pytest.mark.shared_volume  # also two mounts of a real MooseFS: two pods on one network volume
def test_two_pods_on_different_presets_download_at_the_same_time(settings, settings_b, make_blob):
    blobs = {"a1": make_blob(4 << 20), "b1": make_blob(4 << 20)}
    with FileServer(rate_limit=400_000) as cdn:  # seconds per file: both are on the wire together
        write_manifest(settings, cdn, blobs, {"pa": ["a1"], "pb": ["b1"]})
        with services(pod(settings, "pod-a"), pod(settings_b, "pod-b")) as (a, b):
            a.start_preset("pa")
            b.start_preset("pb")

            with create_app(b.settings, b, auth_config=AuthConfig(PASSWORD, "DOWNLOADER_PASSWORD")).test_client() as client:

                def both_downloading() -> tuple[dict[str, Any], str] | None:
                    """pod-b's API and page, at a moment when each pod has its file downloading."""
                    api = client.get("/api/downloads", headers=BEARER).get_json()
                    rows = {d["id"]: d for d in api["downloads"]}
                    # Which pod takes which file is whoever has a free slot first (the queue is shared): any way
                    # round, each pod has one file on the wire at the same moment.
                    if all(rows[i]["state"] == "downloading" and rows[i]["bytes_done"] > 0 for i in blobs) and \
                            {rows["a1"]["pod"], rows["b1"]["pod"]} == {"pod-a", "pod-b"}:
                        return rows, client.get("/downloads/live", headers=BEARER).get_data(as_text=True)
                    return None

                _rows, page = wait_for(both_downloading, "each pod to have a file downloading at one moment")
            assert a.wait_settled(list(blobs), 120) and b.wait_settled(list(blobs), 120)
            # A pod lets go of a file once it is done: no pod shows as fetching it any more.
            wait_for(lambda: {d["id"]: d["pod"] for d in snapshot(a)["downloads"]} == {"a1": None, "b1": None},
                     "both pods to let go of their finished files")
    assert "fetching on pod <span class=\"mono\">pod-a</span>" in page and "pod-b</span>" in page
    assert {r.state for r in a.store.downloads()} == {"done"}


@pytest.mark.shared_volume  # also two mounts of a real MooseFS: two pods on one network volume
def test_a_second_pods_start_never_requeues_a_live_pods_file(settings, settings_b, make_blob):
    blob = make_blob(4 << 20)
    with FileServer(rate_limit=300_000) as cdn:
        write_manifest(settings, cdn, {"m": blob}, {"p": ["m"]})
        with services(pod(settings, "pod-a")) as (a,):
            a.start_preset("p")
            wait_for(lambda: a.get("m").bytes_done > 0, "pod-a to be downloading")
            with services(pod(settings_b, "pod-b")) as (b,):
                wait_for(lambda: b.manager.ticks > 10, "pod-b's loop to run a while")
                assert live_holders(b.store) == {"m": "pod-a"}
                assert a.wait_settled(["m"], 120)
                events = [e.message for e in b.store.events("m", limit=500)]
    assert not [m for m in events if "interrupted" in m or "stopped" in m], events
    assert a.get("m").state == "done"


@pytest.fixture
def slow_cdn() -> Iterator[FileServer]:
    with FileServer(rate_limit=500_000) as server:
        yield server


@pytest.mark.shared_volume  # also two mounts of a real MooseFS: two pods on one network volume
def test_a_pod_killed_mid_file_is_taken_over_and_the_file_resumes(settings, settings_b, make_blob, slow_cdn, tmp_path):
    blob = make_blob(10 << 20)
    write_manifest(settings, slow_cdn, {"big": blob}, {"p": ["big"]})
    env = {"DOWNLOADER_PASSWORD": PASSWORD, "DOWNLOADER_CLAIM_LEASE": str(LEASE), "DOWNLOADER_MAX_CONCURRENT": "1",
           "ARIA2_CONNECTIONS": "1"}
    with service_process(settings, tmp_path / "a.log", RUNPOD_POD_ID="pod-a", **env) as a, \
         service_process(settings_b, tmp_path / "b.log", RUNPOD_POD_ID="pod-b", **env) as b:
        pods = {"pod-a": a, "pod-b": b}
        code, _ = a.api("POST", "/api/presets/p/start", PASSWORD)
        assert code == 202
        part = settings.models_dir / "loras/big.safetensors.part"

        def midway() -> str | None:
            """The pod fetching the file once it is mid-way (whichever pod had a free slot first took it), as
            both pods show it."""
            rows = [next(d for d in p.api("GET", "/api/downloads", PASSWORD)[1]["downloads"] if d["id"] == "big")
                    for p in (a, b)]
            holder = rows[0]["pod"]
            far = all(r["pod"] == holder and r["bytes_done"] > 3 << 20 for r in rows)
            return holder if holder and far and part.with_name(part.name + ".aria2").exists() else None

        dead = wait_for(midway, "a pod to be mid-way through the file")
        survivor_id = "pod-b" if dead == "pod-a" else "pod-a"
        survivor = pods[survivor_id]
        lock = json.loads((settings.state_dir / f"owner-{dead}.lock").read_text())
        pods[dead].proc.kill()  # kill -9 of that pod's service and its aria2c: the pod is gone
        os.kill(lock["aria2_pid"], signal.SIGKILL)
        pods[dead].proc.wait(10)
        assert slow_cdn.wait_idle(30)
        sent_before = slow_cdn.bytes_sent()

        def done_on_survivor() -> dict[str, Any] | None:
            _code, data = survivor.api("GET", "/api/downloads", PASSWORD)
            [row] = [d for d in data["downloads"] if d["id"] == "big"]
            return row if row["state"] in ("done", "failed") else None

        row = wait_for(done_on_survivor, f"{survivor_id} to finish the file")
        wait_for(lambda: done_on_survivor()["pod"] is None, f"{survivor_id} to let go of the finished file")
        assert slow_cdn.wait_idle(30)
        sent = slow_cdn.bytes_sent()
        code, status = survivor.api("GET", "/healthz", PASSWORD)
    with Store(settings.db_path) as store:
        events = [e.message for e in store.events("big", limit=500)]
    assert row["state"] == "done" and row["verified"]
    assert (settings.models_dir / "loras/big.safetensors").read_bytes() == blob.data
    assert any(f"pod {dead} stopped" in m for m in events), events
    assert any("resuming at" in m and survivor_id in m for m in events), events
    assert sent < sent_before + blob.size, f"resumed, not started over: {sent} after {sent_before}"
    assert code == 200 and status["downloads"]["done"] == 1
    assert integrity(settings.db_path) == "ok"


def test_the_cli_finds_its_own_pods_service(settings, tmp_path):
    env = {"DOWNLOADER_PASSWORD": PASSWORD}
    with service_process(settings, tmp_path / "a.log", RUNPOD_POD_ID="pod-a", **env) as a, \
         service_process(settings, tmp_path / "b.log", RUNPOD_POD_ID="pod-b", **env) as b:
        records = sorted(p.name for p in settings.state_dir.glob("service-*.json"))
        assert records == ["service-pod-a.json", "service-pod-b.json"]
        assert find_service(settings.state_dir, "pod-a").info.pid == a.proc.pid
        assert find_service(settings.state_dir, "pod-b").info.pid == b.proc.pid
        assert find_service(settings.state_dir, "pod-c") is None
        # A record naming a pod that its port's service is not (a port reused by another pod's service).
        forged = json.loads((settings.state_dir / "service-pod-a.json").read_text()) | {"pod": "pod-x"}
        (settings.state_dir / "service-pod-x.json").write_text(json.dumps(forged))
        assert find_service(settings.state_dir, "pod-x") is None
