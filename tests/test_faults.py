"""Every fault a user meets is answered in words, and no user data is lost (#13): a file that cannot be placed, a
size pinned in the manifest, a server that ignores Range, rate limits, gated and private repos, a full disk, and
the bounded event history. Real aria2c, real SQLite, loopback servers (tests/servers.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from downloader import hosts
from downloader.aria2 import Aria2Status
from downloader.config import Settings
from downloader.fetch import fetch
from downloader.manager import Manager
from downloader.manifest import ModelSpec
from downloader.plan import build_plan
from downloader.state import EVENTS_KEPT, Store
from tests.servers import FileServer
from tests.test_fetch import run_until


def spec(source: str, dest: str = "loras/model.bin", **kw: object) -> ModelSpec:
    return ModelSpec(id=kw.pop("id", "model"), source=source, dest=dest, **kw)  # type: ignore[arg-type]


def events(settings: Settings, download_id: str = "model") -> list[str]:
    """The row's history, oldest first, as the UI and `status` show it."""
    with Store(settings.db_path) as store:
        return [e.message for e in reversed(store.events(download_id, limit=1000))]


def run_planned(settings: Settings, specs: list[ModelSpec], between=None, on_tick=None) -> list:
    """Plan and submit `specs`, call `between()` (change the servers after the plan), then run to the end."""
    with Store(settings.db_path) as store, Manager(settings, store) as manager:
        ids = manager.submit(build_plan(specs, settings, store))
        if between is not None:
            between()
        return manager.run(ids, on_tick=on_tick)


# --- 1. a file that cannot be placed --------------------------------------------------------------------------
def test_a_file_that_cannot_be_placed_fails_in_words_is_retried_and_keeps_its_bytes(settings, cdn, make_blob):
    blob = make_blob(2 << 20)
    cdn.add_file("/m.bin", blob.path)
    dest = settings.models_dir / "loras/model.bin"
    settings = settings.with_(max_attempts=2)

    def a_folder_takes_the_name(rows: list) -> None:
        # While the file downloads, something makes a folder with its name: the rename at the end must fail.
        if rows[0].state == "downloading" and not dest.exists():
            dest.mkdir()

    [row] = fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256)], settings, on_tick=a_folder_takes_the_name)
    assert row.state == "failed" and row.attempts == 2
    assert f"cannot place the file at {dest}: Is a directory" in row.error and "gave up after 2 attempts" in row.error
    assert any("cannot place the file" in m and "retrying in" in m for m in events(settings))
    part = dest.with_name(dest.name + ".part")
    assert part.read_bytes() == blob.data, "the downloaded bytes are kept"
    # The folder is moved away: the next fetch places the kept bytes without downloading them again.
    dest.rmdir()
    cdn.reset_stats()
    [row] = fetch([spec(cdn.url + "/m.bin", sha256=blob.sha256)], settings)
    assert row.state == "done" and row.verified and dest.read_bytes() == blob.data
    assert cdn.bytes_sent() == 0


# --- 3. a size pinned in the manifest survives a fresh resolve ----------------------------------------------------
def test_a_pinned_size_is_kept_and_checked_when_the_source_is_resolved_again(settings, cdn, make_blob):
    blob, bigger = make_blob(1 << 20), make_blob(3 << 20)
    cdn.add_file("/m.bin", blob.path)
    # Planned against the right file; then the server's file changes: the first attempt gets the wrong size,
    # and the retry resolves the source again, where the manifest's size must still be the one checked.
    [row] = run_planned(
        settings, [spec(cdn.url + "/m.bin", size=blob.size)], between=lambda: cdn.replace_content("/m.bin", bigger.path)
    )
    assert row.state == "failed"
    assert f"the manifest says {blob.size} bytes but the server says {bigger.size}" in row.error
    assert not (settings.models_dir / "loras/model.bin").exists(), "a file of the wrong size is never placed"


def test_a_pinned_size_survives_a_restart_of_the_service(settings, cdn, make_blob):
    """The pin is in the state DB: a download queued by an earlier run, resolved afresh by a new process, is still
    checked against the manifest's size (and a DB of an older version gets the column)."""
    blob, bigger = make_blob(1 << 20), make_blob(3 << 20)
    cdn.add_file("/m.bin", bigger.path)  # the server's file changed since the manifest was written
    with Store(settings.db_path) as store:
        store.upsert("model", source=cdn.url + "/m.bin", dest="loras/model.bin", size=blob.size, size_origin="manifest")
    with Store(settings.db_path) as store, Manager(settings, store) as manager:  # a new process: nothing in memory
        [row] = manager.run(["model"])
    assert row.state == "failed" and f"the manifest says {blob.size} bytes but the server says {bigger.size}" in row.error
    assert not (settings.models_dir / "loras/model.bin").exists()


# --- 4. a server that ignores Range on resume --------------------------------------------------------------------
def test_a_server_that_ignores_range_on_resume_gets_the_file_started_over(settings, make_blob):
    blob = make_blob(6 << 20)
    with FileServer(rate_limit=1_500_000) as cdn:
        cdn.add_file("/m.bin", blob.path)
        s = spec(cdn.url + "/m.bin", sha256=blob.sha256)
        with Store(settings.db_path) as store, Manager(settings, store) as manager:
            ids = manager.submit(build_plan([s], settings, store))
            run_until(manager, ids, store, lambda st: st.get("model").bytes_done > 1 << 20)
            cdn.ignore_range = True  # e.g. a proxy in front of it now: every answer is 200 with the whole body
            cdn.reset_stats()
            manager.resume("model")
            [row] = manager.run(ids)
        whole = [r for r in cdn.requests if r.method == "GET" and r.status == 200]
    assert row.state == "done" and row.verified and row.attempts == 0
    assert (settings.models_dir / "loras/model.bin").read_bytes() == blob.data
    assert any("ignores Range requests" in m and "starting it over" in m for m in events(settings))
    # The resume's ranged requests were answered with whole bodies; the fresh start was one plain GET.
    assert [r for r in whole if r.range is None], "the file was started over without a Range header"


# --- 5. 429 Too Many Requests with Retry-After --------------------------------------------------------------------
def test_a_hub_that_rate_limits_is_waited_for_and_other_hosts_go_on(settings, hub, cdn, make_blob):
    hub_blob, cdn_blob = make_blob(1 << 20), make_blob(64 << 10)
    hub.add_file("Org/Repo", "m.safetensors", hub_blob.path)
    cdn.add_file("/other.bin", cdn_blob.path)
    hub.rate_limit_next(2, "m.safetensors")
    settings = settings.with_(hf_endpoint=hub.url)
    seen: list[dict[str, tuple[str, str | None]]] = []
    [other, row] = fetch(
        [spec(cdn.url + "/other.bin", "loras/other.bin", id="a-other"), spec("hf://Org/Repo/m.safetensors", id="b-hub")],
        settings,
        on_tick=lambda rows: seen.append({r.id: (r.state, r.error) for r in rows}),
    )
    assert row.state == "done" and row.verified and row.attempts == 0, "a rate limit is not a failed attempt"
    assert other.state == "done"
    limited = [r for r in hub.requests if r.status == 429]
    assert len(limited) == 1, "no request went to the hub before its Retry-After had passed"
    assert "rate-limited by the hub, retrying in 2 s" in events(settings, "b-hub")
    # The other host's file went on meanwhile: it was done while the hub's file still waited, saying why.
    assert any(
        tick["a-other"][0] == "done" and tick["b-hub"] == ("queued", "rate-limited by the hub, retrying in 2 s")
        for tick in seen
    )


def test_a_cdn_that_rate_limits_during_the_download_is_waited_for(settings, cdn, make_blob, monkeypatch):
    # aria2 reports a 429 without the server's Retry-After: the downloader waits UNKNOWN_RETRY_AFTER then.
    monkeypatch.setattr(hosts, "UNKNOWN_RETRY_AFTER", 1.0)
    blob = make_blob(1 << 20)
    cdn.add_file("/m.bin", blob.path)
    [row] = run_planned(
        settings, [spec(cdn.url + "/m.bin", sha256=blob.sha256)], between=lambda: cdn.rate_limit_next(1, "/m.bin")
    )
    assert row.state == "done" and row.verified and row.attempts == 0
    assert len([r for r in cdn.requests if r.status == 429]) == 1, "no request inside the rate-limit window"
    assert f"rate-limited by 127.0.0.1:{cdn.port}, retrying in 1 s" in events(settings)


def test_the_hubs_cdn_rate_limiting_a_download_is_said_and_waited_for(settings, hub, make_blob, monkeypatch):
    monkeypatch.setattr(hosts, "UNKNOWN_RETRY_AFTER", 1.0)
    blob = make_blob(1 << 20)
    hub.add_file("Org/Repo", "m.safetensors", blob.path)
    settings = settings.with_(hf_endpoint=hub.url)
    [row] = run_planned(
        settings, [spec("hf://Org/Repo/m.safetensors")], between=lambda: hub.cdn.rate_limit_next(1)
    )
    assert row.state == "done" and row.verified and row.attempts == 0
    assert len([r for r in hub.cdn.requests if r.status == 429]) == 1
    assert "rate-limited by the hub, retrying in 1 s" in events(settings)


# --- 6. gated and private hub repositories --------------------------------------------------------------------
def test_a_gated_repo_fails_at_once_with_where_to_accept_the_licence(settings, hub, make_blob):
    blob = make_blob(1 << 20)
    hub.gate("Org/Gated", "hf_right")
    hub.add_file("Org/Gated", "m.safetensors", blob.path)
    settings = settings.with_(hf_endpoint=hub.url)
    [row] = fetch([spec("hf://Org/Gated/m.safetensors")], settings)
    assert row.state == "failed" and row.attempts <= 1
    assert row.error.startswith(f"gated: accept the licence at {hub.url}/Org/Gated and set HF_TOKEN")
    assert hub.cdn.bytes_sent() == 0


def test_a_private_or_missing_repo_says_set_hf_token(settings, hub):
    settings = settings.with_(hf_endpoint=hub.url)
    [row] = fetch([spec("hf://Org/Private/m.safetensors")], settings)
    assert row.state == "failed" and row.error.startswith("private: set HF_TOKEN")


def test_a_403_from_the_cdn_right_after_a_fresh_url_means_access_not_expiry(settings, hub, make_blob):
    blob = make_blob(1 << 20)
    hub.add_file("Org/Repo", "m.safetensors", blob.path)
    hub.cdn.fail_next(100, status=403)  # the CDN refuses every download of it
    settings = settings.with_(hf_endpoint=hub.url)
    [row] = fetch([spec("hf://Org/Repo/m.safetensors")], settings)
    assert row.state == "failed" and row.attempts == 1
    assert row.error.startswith(f"gated: accept the licence at {hub.url}/Org/Repo and set HF_TOKEN")
    # One fresh signed URL in case the first had expired; its 403 settles it (not five re-resolves, then retries).
    assert len([r for r in hub.cdn.requests if r.status == 403]) == 2


# --- 7. a full disk, from aria2's error codes --------------------------------------------------------------------
class ErrorDaemon:
    """Stands in for aria2c to report one given error for every download (codes a test cannot provoke on
    demand, such as EACCES on a path that contains "space")."""

    def __init__(self, code: str, message: str) -> None:
        self.code, self.message, self.alive, self.pid = code, message, False, 4242
        self._gids = itertools.count()

    def start(self) -> None:
        self.alive = True

    def stop(self, timeout: float = 10.0, graceful: bool = True) -> None:
        self.alive = False

    def check_alive(self) -> None:
        assert self.alive

    def add(self, url: str, directory: Path, out: str, headers: list[str], size: int | None = None, **kw) -> str:
        return f"gid{next(self._gids)}"

    def status(self, gid: str) -> Aria2Status:
        return Aria2Status(gid, "error", 0, 0, 0, None, 0, self.code, self.message)

    def remove(self, gid: str) -> None:
        pass


@pytest.mark.parametrize(
    ("code", "message", "disk_full"),
    [
        ("9", "There is not enough disk space available.", True),
        ("17", "Failed to write into the file /x/m.part, cause: No space left on device", True),
        ("16", "Failed to make the directory /x, cause: No space left on device", True),
        ("1", "Unknown error: No space left on device", True),  # the message as the fallback
        # A file error whose path merely contains "space" (every default path is under /workspace) is not ENOSPC.
        ("15", "Failed to open the file /workspace/ComfyUI/models/loras/m.part, cause: Permission denied", False),
        ("17", "Failed to read from the file /workspace/m.part, cause: Input/output error", False),
    ],
)
def test_a_full_disk_is_told_from_aria2s_error_code(settings, cdn, make_blob, code, message, disk_full):
    blob = make_blob(64 << 10)
    cdn.add_file("/m.bin", blob.path)
    settings = settings.with_(max_attempts=1)
    with Store(settings.db_path) as store, Manager(settings, store, daemon=ErrorDaemon(code, message)) as manager:
        [row] = manager.run(manager.submit(build_plan([spec(cdn.url + "/m.bin")], settings, store)))
    assert row.state == "failed"
    if disk_full:
        assert row.error.startswith("disk full:") and "kept" in row.error
    else:
        assert "disk full" not in row.error and f"aria2 error {code}: {message}" in row.error


# --- 8. the event history is bounded ---------------------------------------------------------------------------
def test_each_downloads_history_keeps_the_newest_events_only(settings):
    with Store(settings.db_path) as store:
        for download_id in ("busy", "quiet"):
            store.upsert(download_id, source="https://example.invalid/f.bin", dest=f"loras/{download_id}.bin")
        store.log("quiet", "quiet event")
        for n in range(EVENTS_KEPT + 60):
            store.log("busy", f"event {n}")
        store.log(None, "a service event")
        kept = [e.message for e in store.events("busy", limit=10_000)]
        quiet = [e.message for e in store.events("quiet", limit=10_000)]
        service = [e.message for e in store.events(None, limit=10_000) if e.download_id is None]
    assert len(kept) == EVENTS_KEPT, "the bound holds"
    assert kept[0] == f"event {EVENTS_KEPT + 59}" and kept[-1] == "event 60", "the newest are the ones kept"
    assert quiet == ["quiet event", "added"], "another download's history is untouched"
    assert service == ["a service event"]
