"""The service's loop cannot die silently (issue #11): a failing tick is logged and the loop comes back, aria2c
killed mid-download is started again and the download resumes from its control file, and a slow source does not
freeze the loop. Real aria2c, real SQLite, loopback servers; every wait is on a condition."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator

import pytest

from downloader.manifest import ModelSpec
from downloader.service import DownloadService, EngineUnavailable
from downloader.state import DownloadState, Store
from tests.conftest import wait_for, wait_service_started
from tests.servers import FileServer

S = DownloadState



def health_when(svc: DownloadService, predicate):
    """A condition for `wait_for`: the service's health once `predicate(health)` holds, else None."""

    def check():
        health = svc.health()
        return health if predicate(health) else None

    return check


def state_of(svc: DownloadService, download_id: str) -> str | None:
    row = svc.store.get(download_id)
    return None if row is None else row.state


@pytest.fixture
def svc(settings) -> Iterator[DownloadService]:
    service = DownloadService(settings)
    service.start()
    wait_service_started(service)
    yield service
    service.stop()


def test_an_exception_in_the_loop_is_logged_reported_and_the_loop_recovers(svc, settings, cdn, make_blob, caplog):
    blob = make_blob(2 << 20)
    cdn.add_file("/m.bin", blob.path)
    wait_for(lambda: svc.health().ok, "the engine to be healthy")
    failing = [True]
    real = svc.manager._start_queued

    def broken() -> None:
        if failing[0]:
            raise RuntimeError("injected failure: the disk said no")
        real()

    svc.manager._start_queued = broken  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="downloader.service")
    _, reason = wait_for(health_when(svc, lambda h: not h.ok), "health to report the failure")
    assert reason == "the loop failed: RuntimeError: injected failure: the disk said no"
    assert svc.summary()["manager"] == "failed" and "injected failure" in svc.summary()["note"]
    logged = wait_for(lambda: [r for r in caplog.records if "injected failure" in r.getMessage()], "the log line")
    assert logged[0].exc_info is not None, "logged with its traceback"

    # Commands still get answers while it fails (they run at the start of each try).
    svc.add(ModelSpec(id="m", source=f"{cdn.url}/m.bin", dest="loras/m.safetensors", sha256=blob.sha256))
    assert state_of(svc, "m") == "queued" and not svc.health().ok

    failing[0] = False
    wait_for(lambda: state_of(svc, "m") == "done", "the download after the loop recovered")
    assert svc.health() == (True, None)
    assert (settings.models_dir / "loras/m.safetensors").read_bytes() == blob.data


def test_aria2c_killed_mid_download_is_restarted_and_the_download_resumes(settings, make_blob):
    blob = make_blob(8 << 20)
    with FileServer(rate_limit=300_000) as slow:  # per connection: several seconds for the whole file
        slow.add_file("/m.bin", blob.path)
        svc = DownloadService(settings)
        svc.start()
        try:
            wait_service_started(svc)
            svc.add(ModelSpec(id="m", source=f"{slow.url}/m.bin", dest="loras/m.safetensors", sha256=blob.sha256))
            part = settings.models_dir / "loras/m.safetensors.part"
            wait_for(lambda: svc.get("m").bytes_done > 2 << 20 and part.with_name(part.name + ".aria2").exists(),
                     "the download to be mid-way with a control file")
            old_pid = svc.manager.daemon.pid
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)
            assert slow.wait_idle(30), "aria2c's connections ended with it"
            sent_at_kill = slow.bytes_sent()

            wait_for(lambda: state_of(svc, "m") in ("done", "failed"), "the download to finish without a click")
            row = svc.get("m")
            events = [e.message for e in svc.store.events("m")]
            new_pid = svc.manager.lock.owner().get("aria2_pid")
            total = slow.bytes_sent()
        finally:
            svc.stop()
    assert row.state == "done" and row.verified, (row.state, row.error)
    assert (settings.models_dir / "loras/m.safetensors").read_bytes() == blob.data
    assert new_pid not in (None, old_pid), "a new aria2c was started"
    assert "interrupted: resuming" in events
    assert any(m.startswith("downloading (resuming at") for m in events), events
    assert total < sent_at_kill + blob.size, f"refetched from zero: {total} bytes sent for {blob.size}"


def test_aria2c_missing_is_reported_and_retried(settings, tmp_path):
    svc = DownloadService(settings.with_(aria2c=str(tmp_path / "no-such-aria2c")))
    svc.start()
    try:
        ok, reason = wait_for(health_when(svc, lambda h: h.reason != "starting"), "a reason")
        assert not ok and reason.startswith("aria2c not running: aria2c not found")
        assert svc.fatal == reason and svc.summary()["manager"] == "failed"
        assert svc.manager.ticks == 0
        with pytest.raises(EngineUnavailable, match="aria2c not found"):  # a click is told why, in words
            svc.bulk("pause")
    finally:
        svc.stop()


def test_a_slow_source_does_not_freeze_the_loop(settings, cdn, make_blob):
    fast_blob, slow_blob = make_blob(2 << 20), make_blob(1 << 20)
    cdn.add_file("/fast.bin", fast_blob.path)
    with FileServer() as stuck:
        stuck.add_file("/slow.bin", slow_blob.path)
        hold = stuck.hold("/slow.bin")
        # Left queued by an earlier run, so the loop itself has to resolve it.
        with Store(settings.db_path) as store:
            store.upsert("slow", source=f"{stuck.url}/slow.bin", dest="loras/slow.safetensors",
                         sha256=slow_blob.sha256, sha256_origin="manifest")
        svc = DownloadService(settings)
        svc.start()
        try:
            assert hold.arrived.wait(30), "the loop asked the slow server"
            svc.add(ModelSpec(id="fast", source=f"{cdn.url}/fast.bin", dest="loras/fast.safetensors",
                              sha256=fast_blob.sha256))
            wait_for(lambda: state_of(svc, "fast") == "done", "the other download, while the slow one resolves", 30)
            svc.pause("slow")
            assert state_of(svc, "slow") == "paused", "the pause was answered while the source still hangs"
            assert not hold.released.is_set()
            hold.release()
            svc.resume("slow")
            wait_for(lambda: state_of(svc, "slow") == "done", "the slow download once its server answers")
        finally:
            hold.release()
            svc.stop()
    assert (settings.models_dir / "loras/fast.safetensors").read_bytes() == fast_blob.data
    assert (settings.models_dir / "loras/slow.safetensors").read_bytes() == slow_blob.data
