"""End to end through the engine: real aria2c, real SQLite, loopback CDN and hub."""

from __future__ import annotations

import threading
import time

import pytest

from downloader.config import Settings
from downloader.errors import DiskSpaceError, WorkspaceBusy
from downloader.fetch import fetch
from downloader.manager import Manager
from downloader.manifest import ModelSpec
from downloader.plan import build_plan
from downloader.state import Store


def spec(source: str, dest: str = "loras/model.safetensors", **kw: object) -> ModelSpec:
    return ModelSpec(id=kw.pop("id", "model"), source=source, dest=dest, **kw)  # type: ignore[arg-type]


def leftovers(settings: Settings) -> list[str]:
    """Partial-download files anywhere under the models dir."""
    return sorted(p.name for p in settings.models_dir.rglob("*") if p.name.endswith((".part", ".aria2")))


@pytest.mark.shared_volume  # also on a real MooseFS: a RunPod network volume
def test_direct_url_is_downloaded_verified_and_placed(settings, cdn, make_blob):
    blob = make_blob(12 << 20)
    cdn.add_file("/files/m.bin", blob.path)
    [row] = fetch([spec(cdn.url + "/files/m.bin", sha256=blob.sha256)], settings)
    dest = settings.models_dir / "loras/model.safetensors"
    assert row.state == "done" and row.verified and row.error is None
    assert dest.read_bytes() == blob.data
    assert leftovers(settings) == []
    ranged = [r for r in cdn.requests if r.method == "GET" and r.range]
    assert len(ranged) >= 2, "aria2 should split the file over several connections"


def test_hub_file_uses_hub_sha256_and_resolve_url(settings, hub, make_blob):
    blob = make_blob(6 << 20)
    hub.add_file("Org/Repo", "split_files/vae/v.safetensors", blob.path)
    settings = settings.with_(hf_endpoint=hub.url)
    [row] = fetch([spec("hf://Org/Repo/split_files/vae/v.safetensors", "vae/v.safetensors")], settings)
    assert row.state == "done" and row.verified
    assert row.sha256 == blob.sha256 and row.sha256_origin == "hub"
    assert (settings.models_dir / "vae/v.safetensors").read_bytes() == blob.data
    # aria2 was handed the hub's /resolve/ URL (pinned to the commit), not a signed CDN URL
    assert any(r.method == "GET" and "/resolve/" in r.path for r in hub.requests)


def test_pinned_sha_that_disagrees_with_hub_is_refused_before_download(settings, hub, make_blob):
    blob = make_blob(2 << 20)
    hub.add_file("Org/Repo", "m.safetensors", blob.path)
    wrong = "0" * 64
    settings = settings.with_(hf_endpoint=hub.url)
    [row] = fetch([spec("hf://Org/Repo/m.safetensors", sha256=wrong)], settings)
    assert row.state == "failed"
    assert wrong in row.error and blob.sha256 in row.error and "nothing was downloaded" in row.error
    assert hub.cdn.bytes_sent() == 0
    assert not (settings.models_dir / "loras/model.safetensors").exists()


def test_corrupted_content_fails_with_expected_and_got(settings, cdn, make_blob):
    blob = make_blob(3 << 20)
    bad = make_blob(3 << 20)
    cdn.add_file("/m.bin", bad.path)
    settings = settings.with_(max_attempts=2)
    [row] = fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256)], settings)
    assert row.state == "failed"
    assert f"expected {blob.sha256}, got {bad.sha256}" in row.error
    assert not (settings.models_dir / "loras/model.safetensors").exists()
    assert leftovers(settings) == [], "a file that failed verification must not be left behind"
    # once the server has the right bytes, the same fetch succeeds
    cdn.replace_content("/m.bin", blob.path)
    [row] = fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256)], settings)
    assert row.state == "done" and row.verified


def test_dropped_connections_and_503s_are_retried(settings, cdn, make_blob):
    blob = make_blob(8 << 20)
    cdn.add_file("/m.bin", blob.path)
    cdn.drop_next(3, after_bytes=200_000)
    cdn.fail_next(3, status=503)
    settings = settings.with_(aria2_retry_wait=0)
    [row] = fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256)], settings)
    assert row.state == "done" and row.verified
    assert (settings.models_dir / "loras/model.safetensors").read_bytes() == blob.data
    assert sum(1 for r in cdn.requests if r.status == 503) == 3


def test_persistent_503_fails_with_reason_after_bounded_attempts(settings, cdn, make_blob):
    blob = make_blob(1 << 20)
    cdn.add_file("/m.bin", blob.path)
    cdn.fail_next(10_000, status=503, path="/m.bin")
    settings = settings.with_(aria2_retry_wait=0, aria2_max_tries=2, max_attempts=2)
    # the probe itself sees the 503: a retryable error, so the file is still queued and then tried
    [row] = fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256, size=blob.size)], settings)
    assert row.state == "failed"
    assert "503" in row.error or "overload" in row.error.lower()
    assert "gave up after 2 attempts" in row.error


def test_missing_file_fails_at_once_with_404(settings, cdn):
    [row] = fetch([spec(cdn.url + "/nope.bin")], settings)
    assert row.state == "failed" and "404" in row.error


def run_until(manager: Manager, ids: list[str], store: Store, predicate, timeout: float = 30) -> list:
    """Run the manager in a thread until `predicate(store)` holds, then pause everything; returns the rows."""
    result: list = []
    worker = threading.Thread(target=lambda: result.extend(manager.run(ids)))
    worker.start()
    deadline = time.monotonic() + timeout
    while not (reached := predicate(store)) and time.monotonic() < deadline:
        time.sleep(0.02)
    for download_id in ids:
        manager.pause(download_id)
    worker.join(timeout)
    assert reached, f"timed out after {timeout:.0f} s waiting for the condition"
    return result


def test_expired_signed_url_is_resolved_again_and_resumed(settings, make_blob):
    from tests.servers import FakeHub, FileServer

    blob = make_blob(8 << 20)
    with FileServer(host="127.0.0.2", rate_limit=2_000_000) as cdn:
        cdn.sign_required = True
        with FakeHub(cdn=cdn) as hub:
            hub.add_file("Org/Repo", "m.safetensors", blob.path)
            settings = settings.with_(hf_endpoint=hub.url, connections=2)
            s = spec("hf://Org/Repo/m.safetensors")
            with Store(settings.db_path) as store, Manager(settings, store) as manager:
                ids = manager.submit(build_plan([s], settings, store))
                run_until(manager, ids, store, lambda st: st.get("model").bytes_done > 2 << 20)
                # While paused the signature went stale: the CDN answers 403 "Request has expired",
                # as S3/CloudFront do, and aria2 gives up on a 403 without retrying.
                cdn.fail_next(1, status=403)
                manager.resume("model")
                [row] = manager.run(ids)
                events = [e.message for e in store.events("model")]
            expired = [r for r in cdn.requests if r.status == 403]
            sent = cdn.bytes_sent()
    assert row.state == "done" and row.verified
    assert (settings.models_dir / "loras/model.safetensors").read_bytes() == blob.data
    assert expired, "the test must actually hit an expired signature"
    assert any("re-resolving" in m for m in events)
    # the control file was kept: what came before the 403 is not fetched again
    assert sent < blob.size + (1 << 20), f"refetched too much after a fresh signature: {sent} for {blob.size}"


def test_disk_space_is_checked_before_anything_starts(settings, cdn, tmp_path):
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as fh:  # sparse: 4 TiB that take no room here
        fh.truncate(4 << 40)
    cdn.add_file("/huge.bin", huge)
    with pytest.raises(DiskSpaceError) as err:
        fetch([spec(cdn.url + "/huge.bin")], settings)
    assert "need 4.0 TiB" in str(err.value) and "short by" in str(err.value)
    assert cdn.bytes_sent() == 0
    assert leftovers(settings) == []


@pytest.fixture
def small_disk(settings: Settings):
    """The models dir on a 24 MiB tmpfs, so the disk really fills up."""
    import subprocess

    settings.models_dir.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(settings.models_dir)])
    if res.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield settings
    subprocess.run(["umount", "-l", str(settings.models_dir)])


def test_disk_full_midway_fails_cleanly_and_keeps_the_bytes(small_disk, make_blob):
    from tests.servers import FileServer

    settings = small_disk
    blob = make_blob(16 << 20)
    with FileServer(rate_limit=1_000_000) as cdn:
        cdn.add_file("/a.bin", blob.path)
        s = spec(cdn.url + "/a.bin", sha256=blob.sha256)
        result: list = []
        worker = threading.Thread(target=lambda: result.extend(fetch([s], settings)))
        worker.start()  # 16 MiB fit in the 24 MiB disk: the up-front check lets it start
        part = settings.models_dir / "loras/model.safetensors.part"
        deadline = time.monotonic() + 20
        while (not part.exists() or part.stat().st_blocks == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        # another program on the pod fills the disk behind the downloader's back
        with open(settings.models_dir / "filler", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
                    fh.flush()
            except OSError:
                pass
        worker.join(60)
    [row] = result
    assert row.state == "failed"
    assert "disk full" in row.error and "kept" in row.error
    assert part.exists() and part.stat().st_blocks > 0, "what was downloaded is kept for a resume"
    assert not (settings.models_dir / "loras/model.safetensors").exists()


@pytest.mark.shared_volume  # also on a real MooseFS: a RunPod network volume
def test_file_in_place_is_adopted_without_download(settings, cdn, make_blob):
    blob = make_blob(4 << 20)
    cdn.add_file("/m.bin", blob.path)
    dest = settings.models_dir / "loras/model.safetensors"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(blob.data)
    [row] = fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256)], settings)
    assert row.state == "done" and row.verified
    assert cdn.bytes_sent() == 0


def test_wrong_file_in_place_is_moved_aside_and_replaced(settings, cdn, make_blob):
    blob = make_blob(4 << 20)
    cdn.add_file("/m.bin", blob.path)
    dest = settings.models_dir / "loras/model.safetensors"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated by a previous wget")
    [row] = fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256)], settings)
    assert row.state == "done" and dest.read_bytes() == blob.data
    aside = [p.name for p in dest.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and (dest.parent / aside[0]).read_bytes() == b"truncated by a previous wget"


def test_done_files_are_trusted_only_while_present(settings, cdn, make_blob):
    blob = make_blob(2 << 20)
    cdn.add_file("/m.bin", blob.path)
    s = spec(cdn.url + "/m.bin", sha256=blob.sha256)
    fetch([s], settings)
    cdn.reset_stats()
    [row] = fetch([s], settings)
    assert row.state == "done" and cdn.bytes_sent() == 0 and cdn.requests == []  # no network at all
    (settings.models_dir / "loras/model.safetensors").unlink()
    [row] = fetch([s], settings)
    assert row.state == "done" and cdn.bytes_sent() >= blob.size  # fetched again


def test_unverified_direct_url_is_size_checked_and_flagged(settings, cdn, make_blob):
    blob = make_blob(1 << 20)
    cdn.add_file("/m.bin", blob.path)
    [row] = fetch([spec(cdn.url + "/m.bin", "loras/model.bin")], settings)  # not .safetensors: no structure to check
    assert row.state == "done" and row.verified is False and row.sha256_origin is None
    assert row.size == blob.size


def test_stalled_download_is_detected_and_restarted(settings, cdn, make_blob):
    blob = make_blob(2 << 20)
    cdn.add_file("/m.bin", blob.path)
    # Stalls that never end by themselves (an hour; aria2's own timeout is 30 s): the download can only finish
    # in time if the downloader cuts each one short and starts again.
    cdn.stall_next(8, seconds=3600, path="/m.bin")
    settings = settings.with_(stall_seconds=2.0, connections=1)
    result: list = []
    worker = threading.Thread(
        target=lambda: result.extend(fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256)], settings)), daemon=True
    )
    worker.start()
    worker.join(120)  # a generous deadline: about 12 s here, 8 x 30 s if aria2's timeout had to end the stalls
    assert not worker.is_alive(), "a stall must be cut short, not waited out"
    [row] = result
    assert row.state == "done"
    assert cdn.wait_idle(30)
    assert len([r for r in cdn.requests if r.fault == "stall"]) == 8, "every stall was met"
    with Store(settings.db_path) as store:
        assert any("stalled" in e.message for e in store.events("model"))


@pytest.mark.shared_volume  # also on a real MooseFS: a RunPod network volume
def test_pause_keeps_partial_and_resume_continues(settings, make_blob):
    from tests.servers import FileServer

    blob = make_blob(12 << 20)
    with FileServer(rate_limit=1_500_000) as cdn:
        cdn.add_file("/m.bin", blob.path)
        s = spec(cdn.url + "/m.bin", sha256=blob.sha256)
        with Store(settings.db_path) as store, Manager(settings, store) as manager:
            ids = manager.submit(build_plan([s], settings, store))
            [paused] = run_until(manager, ids, store, lambda st: st.get("model").bytes_done > 2 << 20)
            part = settings.models_dir / "loras/model.safetensors.part"
            assert paused.state == "paused" and 0 < paused.bytes_done < blob.size
            assert part.exists() and part.with_name(part.name + ".aria2").exists()
            manager.resume("model")
            [row] = manager.run(ids)
        sent = cdn.bytes_sent()
    assert row.state == "done" and row.verified
    assert sent < blob.size + (3 << 20), f"resume refetched too much: {sent} for {blob.size}"


def test_two_owners_of_one_workspace_are_refused(settings):
    with Store(settings.db_path) as store:
        with Manager(settings, store):
            other = Manager(settings, store)
            with pytest.raises(WorkspaceBusy, match="already downloading"):
                other.start()


def test_file_in_place_is_adopted_even_when_the_source_is_unreachable(settings, make_blob):
    """A pod restarted without network still finds its verified files (the manifest pins the sha256)."""
    blob = make_blob(1 << 20)
    dest = settings.models_dir / "loras/model.safetensors"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(blob.data)
    settings = settings.with_(hf_endpoint="http://127.0.0.1:9")  # nothing listens on the discard port
    [row] = fetch([spec("hf://Org/Repo/m.safetensors", sha256=blob.sha256)], settings)
    assert row.state == "done" and row.verified


def test_hub_briefly_down_is_retried_with_backoff(settings, hub, make_blob):
    blob = make_blob(1 << 20)
    hub.add_file("Org/Repo", "m.safetensors", blob.path)
    hub.fail_next(2, status=503)  # the plan's resolve and the first retry see a hub that is down
    settings = settings.with_(hf_endpoint=hub.url)
    [row] = fetch([spec("hf://Org/Repo/m.safetensors")], settings)
    assert row.state == "done" and row.verified
    with Store(settings.db_path) as store:
        assert any("retrying in" in e.message and "503" in e.message for e in store.events("model"))


def test_resolving_works_from_a_thread_that_runs_an_event_loop(settings, cdn, make_blob):
    """Callers inside an event loop (an async web server, a browser driver) must not break resolution."""
    import asyncio

    from downloader.sources import Resolved, resolve_all

    blob = make_blob(1 << 10)
    cdn.add_file("/m.bin", blob.path)

    async def inside_a_loop() -> list:
        return resolve_all([spec(cdn.url + "/m.bin")], settings)

    [result] = asyncio.run(inside_a_loop())
    assert isinstance(result, Resolved) and result.size == blob.size


def test_a_file_smaller_than_the_split_size_still_uses_several_connections(settings, cdn, make_blob):
    blob = make_blob(8 << 20)
    cdn.add_file("/small.bin", blob.path)
    settings = settings.with_(min_split_size="32M", connections=4)  # the defaults' shape: 8 MiB << 4 x 32M
    [row] = fetch([spec(cdn.url + "/small.bin", sha256=blob.sha256)], settings)
    assert row.state == "done" and row.verified
    cdn.wait_idle()
    ranged = {r.range for r in cdn.requests if r.method == "GET" and r.range}
    assert len(ranged) >= 2, f"one connection only: {ranged}"
