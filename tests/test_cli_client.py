"""The CLI as a client of a running service (issue #11): `downloader serve` owns the workspace, and `fetch`, `status`,
`verify`, `add`, `pause`/`resume`/`retry`/`cancel` ask it over its API; with no service they work in-process.

Real processes: the service as `python -m downloader serve` on a free loopback port, the CLI as
`python -m downloader`, a real aria2c, the loopback CDN of tests/servers.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from downloader.config import service_file
from downloader.state import DownloadState, Store
from tests.conftest import (
    Blob,
    ServiceProcess,
    run_cli,
    service_process,
    start_cli,
    wait_for,
)
from tests.servers import FileServer

PASSWORD = "client-test-pw"
SLOW = 300_000  # bytes/s per connection: a few seconds for a few MiB, time to act on a download mid-way



def row(settings, download_id: str) -> dict[str, Any] | None:
    """The download as the state DB has it (read-only: the service is its writer)."""
    if not settings.db_path.exists():
        return None
    with Store(settings.db_path) as store:
        r = store.get(download_id)
        return r.as_dict() if r else None


def state_of(settings, download_id: str) -> str | None:
    r = row(settings, download_id)
    return r["state"] if r else None


def owner_record(settings) -> dict[str, Any]:
    """What the newest lock file says (the workspace's `owner.lock`, or a service's `owner-<pod>.lock` when pods
    may share the workspace): the owner's pid and its aria2c's."""
    locks = sorted(settings.state_dir.glob("owner*.lock"), key=lambda p: p.stat().st_mtime) if settings.state_dir.exists() else []
    try:
        return dict(json.loads(locks[-1].read_text())) if locks else {}
    except (OSError, ValueError):
        return {}


def lock_owner(settings) -> int | None:
    return owner_record(settings).get("pid")


def service_record(settings) -> Path:
    """The running service's record: `service-<pod>.json`, one per pod."""
    [record] = settings.state_dir.glob("service-*.json")
    return record


@contextmanager
def running_service(settings, tmp_path: Path) -> Iterator[ServiceProcess]:
    """The service for the test's workspace, once it owns the workspace (the lock names it)."""
    with service_process(settings, tmp_path / "service.log", DOWNLOADER_PASSWORD=PASSWORD) as svc:
        wait_for(lambda: lock_owner(settings) == svc.proc.pid, "the service to own the workspace")
        yield svc


@pytest.fixture
def service(settings, tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_service(settings, tmp_path) as svc:
        yield svc


def shared_manifest(settings, text: str) -> Path:
    """A manifest in $WORKSPACE/manifests: the service's catalog and the CLI's both have it."""
    folder = settings.workspace / "manifests"
    folder.mkdir(exist_ok=True)
    path = folder / "mine.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def model_yaml(download_id: str, url: str, dest: str, sha256: str | None = None) -> str:
    pin = f"\n    sha256: {sha256}" if sha256 else ""
    return f"  - id: {download_id}\n    source: {url}\n    dest: {dest}{pin}\n"


def placed(settings, dest: str, blob: Blob) -> bool:
    path = settings.models_dir / dest
    return path.exists() and path.stat().st_size == blob.size and path.read_bytes() == blob.data


# --- fetch ------------------------------------------------------------------------------------------------
def test_fetch_of_a_manifest_file_is_done_by_the_service(settings, service, cdn, make_blob, one_model):
    blob = make_blob(3 << 20)
    cdn.add_file("/m.bin", blob.path)
    path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors", blob.sha256)
    res = run_cli(settings, "fetch", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 of 1 file(s) verified in place" in res.stdout
    assert "waiting" not in res.stdout + res.stderr  # it never queued behind the service's lock
    assert placed(settings, "loras/m.safetensors", blob)
    # The service did the downloading: it held the workspace all along, and its row says verified.
    assert lock_owner(settings) == service.proc.pid
    code, data = service.api("GET", "/api/downloads", PASSWORD)
    [m] = [d for d in data["downloads"] if d["id"] == "m"]
    assert code == 200 and m["state"] == "done" and m["verified"] is True


def test_fetch_of_a_preset_and_status_show_the_services_rows(settings, tmp_path, cdn, make_blob):
    a, b = make_blob(1 << 20), make_blob(2 << 20)
    cdn.add_file("/a.bin", a.path)
    cdn.add_file("/b.bin", b.path)
    shared_manifest(
        settings,
        "presets:\n  pair: [a, b]\nmodels:\n"
        + model_yaml("a", f"{cdn.url}/a.bin", "loras/a.safetensors", a.sha256)
        + model_yaml("b", f"{cdn.url}/b.bin", "vae/b.safetensors", b.sha256),
    )
    with running_service(settings, tmp_path):
        res = run_cli(settings, "fetch", "--preset", "pair")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "2 of 2 file(s) verified in place" in res.stdout
        assert placed(settings, "loras/a.safetensors", a) and placed(settings, "vae/b.safetensors", b)
        status = run_cli(settings, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = {r["id"]: r for r in json.loads(status.stdout)}
        assert set(rows) == {"a", "b"}  # the service's rows, not its catalog's models never started
        assert rows["a"]["state"] == rows["b"]["state"] == "done" and rows["b"]["bytes_done"] == b.size
        table = run_cli(settings, "status")
        assert table.returncode == 0
        assert re.search(r"\bb\b.*done.*100%.*2\.0 MiB", table.stdout), table.stdout


@pytest.fixture
def preset_service(settings, tmp_path: Path, cdn, make_blob) -> Iterator[tuple[ServiceProcess, Blob]]:
    """A service whose catalog has preset `pair`: a good file and one the CDN answers 404 for."""
    good = make_blob(1 << 20)
    cdn.add_file("/good.bin", good.path)
    shared_manifest(
        settings,
        "presets:\n  pair: [good, gone]\nmodels:\n"
        + model_yaml("good", f"{cdn.url}/good.bin", "loras/good.safetensors", good.sha256)
        + model_yaml("gone", f"{cdn.url}/missing.bin", "loras/gone.safetensors", good.sha256),
    )
    with running_service(settings, tmp_path) as svc:
        yield svc, good


def test_a_failing_file_makes_fetch_exit_1_with_its_reason(settings, preset_service):
    _svc, good = preset_service
    res = run_cli(settings, "fetch", "--preset", "pair")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 of 2 file(s) verified in place" in res.stdout
    [line] = [x for x in res.stderr.splitlines() if x.startswith("FAILED")]
    assert line.startswith("FAILED gone: ") and "404" in line
    assert placed(settings, "loras/good.safetensors", good)
    # One file asked for alone: the service refuses it at once, and fetch says so the same way.
    res = run_cli(settings, "fetch", "--only", "gone")
    assert res.returncode == 1
    assert any(x.startswith("FAILED gone: ") and "404" in x for x in res.stderr.splitlines()), res.stderr


def test_unknown_preset_or_model_is_bad_input(settings, preset_service):
    res = run_cli(settings, "fetch", "--preset", "nope")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unknown preset 'nope'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli(settings, "pause", "no-such-id")
    assert res.returncode == 2 and "no-such-id" in res.stderr


def test_ctrl_c_stops_following_and_the_service_finishes(settings, service, make_blob, one_model):
    blob = make_blob(4 << 20)
    with FileServer(rate_limit=SLOW) as cdn:
        cdn.add_file("/m.bin", blob.path)
        path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors", blob.sha256)
        proc = start_cli(settings, "fetch", str(path))
        wait_for(lambda: (row(settings, "m") or {}).get("bytes_done", 0) > 0, "the download to start", proc=proc)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
        assert proc.returncode == 130, out
        assert "stopped following: the downloads go on in the service; `downloader status` shows them" in out
        assert "Traceback" not in out
        wait_for(lambda: state_of(settings, "m") in ("done", "failed"), "the service to finish the download", 120)
    assert state_of(settings, "m") == "done"
    assert placed(settings, "loras/m.safetensors", blob)


def test_sigterm_stops_following_with_143(settings, service, make_blob, one_model):
    blob = make_blob(4 << 20)
    with FileServer(rate_limit=SLOW) as cdn:
        cdn.add_file("/m.bin", blob.path)
        path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors", blob.sha256)
        proc = start_cli(settings, "fetch", str(path))
        wait_for(lambda: (row(settings, "m") or {}).get("bytes_done", 0) > 0, "the download to start", proc=proc)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
        assert proc.returncode == 143, out
        assert "stopped following" in out
        wait_for(lambda: state_of(settings, "m") in ("done", "failed"), "the service to finish the download", 120)
    assert state_of(settings, "m") == "done"


# --- add, pause, resume -----------------------------------------------------------------------------------
def test_add_queues_in_the_service_and_the_file_arrives(settings, service, cdn, make_blob):
    blob = make_blob(2 << 20)
    cdn.add_file("/x.bin", blob.path)
    res = run_cli(settings, "add", f"{cdn.url}/x.bin", "--dest", "loras/x.safetensors", "--sha256", blob.sha256)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "queued x -> loras/x.safetensors" in res.stdout
    wait_for(lambda: state_of(settings, "x") in ("done", "failed"), "the added download to finish")
    assert state_of(settings, "x") == "done" and row(settings, "x")["verified"] is True
    assert placed(settings, "loras/x.safetensors", blob)
    # The same id for another file: refused by the service (409), in one line.
    res = run_cli(settings, "add", f"{cdn.url}/other.bin", "--dest", "loras/y.safetensors", "--id", "x")
    assert res.returncode == 1
    assert "already used" in res.stderr and "Traceback" not in res.stderr
    # A destination outside the models folder: bad input, refused before asking anyone.
    res = run_cli(settings, "add", f"{cdn.url}/x.bin", "--dest", "../escape.bin")
    assert res.returncode == 2 and "dest" in res.stderr


def test_pause_then_resume_through_the_service(settings, service, make_blob):
    blob = make_blob(4 << 20)
    with FileServer(rate_limit=SLOW) as cdn:
        cdn.add_file("/p.bin", blob.path)
        res = run_cli(settings, "add", f"{cdn.url}/p.bin", "--dest", "loras/p.safetensors", "--sha256", blob.sha256)
        assert res.returncode == 0, res.stderr
        wait_for(lambda: (row(settings, "p") or {}).get("bytes_done", 0) > 0, "the download to start")
        res = run_cli(settings, "pause", "p")
        assert res.returncode == 0, res.stderr
        wait_for(lambda: state_of(settings, "p") == "paused", "the service to pause it")
        status = run_cli(settings, "status", "--json")
        assert [r["state"] for r in json.loads(status.stdout) if r["id"] == "p"] == ["paused"]
        res = run_cli(settings, "resume", "all")
        assert res.returncode == 0, res.stderr
        assert "resume: 1 download(s)" in res.stdout
        wait_for(lambda: state_of(settings, "p") in ("done", "failed"), "the resumed download to finish", 120)
    assert state_of(settings, "p") == "done"
    assert placed(settings, "loras/p.safetensors", blob)


def test_verify_through_the_service(settings, service, cdn, make_blob, one_model):
    blob = make_blob(1 << 20)
    cdn.add_file("/v.bin", blob.path)
    path = one_model(f"{cdn.url}/v.bin", "vae/v.safetensors", blob.sha256, id="v")
    assert run_cli(settings, "fetch", str(path)).returncode == 0
    res = run_cli(settings, "verify")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok v: sha256 ok" in res.stdout
    target = settings.models_dir / "vae/v.safetensors"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF  # same size, one bad byte: only the hash can tell
    target.write_bytes(bytes(data))
    res = run_cli(settings, "verify", "--only", "v")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "failed v:" in res.stdout and "checksum mismatch" in res.stdout
    assert state_of(settings, "v") == "failed"
    assert not target.exists()  # moved aside: ComfyUI never loads it


# --- finding the service ----------------------------------------------------------------------------------
def test_the_local_token_is_owner_only_and_never_on_a_command_line_or_in_the_log(settings, service, make_blob, one_model):
    record = service_record(settings)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    info = json.loads(record.read_text())
    token = info["token"]
    assert info["pid"] == service.proc.pid and info["port"] == service.port and len(token) >= 32
    code, _ = service.api("GET", "/api/downloads", token)
    assert code == 200  # the web auth accepts it like the password
    for wrong in ("", token[:-1], "not-the-token"):
        code, answer = service.api("POST", "/api/verify", wrong, {})
        assert code == 401 and "authentication required" in answer["error"]
    blob = make_blob(4 << 20)
    with FileServer(rate_limit=SLOW) as cdn:
        cdn.add_file("/m.bin", blob.path)
        path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors", blob.sha256)
        proc = start_cli(settings, "fetch", str(path))  # a client following the service, aria2c downloading
        wait_for(lambda: (row(settings, "m") or {}).get("bytes_done", 0) > 0, "the download to start", proc=proc)
        seen = 0
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            seen += 1
            assert token.encode() not in cmdline, f"the token is on the command line of pid {entry.name}"
        assert seen > 3
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, out
    service.proc.send_signal(signal.SIGTERM)
    service.proc.wait(30)
    assert not record.exists()  # removed on a clean stop
    log = service.log.read_text()
    assert "downloader UI on" in log and token not in log


def test_the_service_dying_mid_way_is_one_clear_line(settings, service, make_blob, one_model):
    blob = make_blob(4 << 20)
    with FileServer(rate_limit=SLOW) as cdn:
        cdn.add_file("/m.bin", blob.path)
        path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors", blob.sha256)
        proc = start_cli(settings, "fetch", str(path))
        wait_for(lambda: (row(settings, "m") or {}).get("bytes_done", 0) > 0, "the download to start", proc=proc)
        aria2_pid = owner_record(settings)["aria2_pid"]
        service.proc.kill()  # kill -9: no clean stop, its record stays behind
        service.proc.wait(10)
        os.kill(aria2_pid, signal.SIGKILL)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1, out
    assert "did not answer" in out and f"pid {service.proc.pid}" in out
    assert "Traceback" not in out
    # The record is stale now (dead pid): the next command works in-process.
    res = run_cli(settings, "status", "--json")
    assert res.returncode == 0 and [r["id"] for r in json.loads(res.stdout)] == ["m"]


def test_a_stale_service_record_means_no_service(settings, cdn, make_blob, one_model):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    settings.state_dir.mkdir(parents=True)
    record = settings.state_dir / service_file("a-dead-pod")
    blob = make_blob(1 << 20)
    cdn.add_file("/m.bin", blob.path)
    path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors", blob.sha256)
    for pid in (dead.pid, os.getpid()):  # a dead pid; a live one whose port does not answer
        from downloader.aria2 import free_port

        record.write_text(json.dumps({"pid": pid, "host": "127.0.0.1", "port": free_port(), "token": "x" * 40,
                                      "pod": "a-dead-pod"}))
        res = run_cli(settings, "fetch", str(path), timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "1 of 1 file(s) verified in place" in res.stdout
    assert placed(settings, "loras/m.safetensors", blob)


def test_a_second_service_for_the_workspace_is_refused(settings, service):
    res = run_cli(settings, "serve", "--host", "127.0.0.1", "--port", "1", timeout=60)
    assert res.returncode == 1
    assert f"pid {service.proc.pid}" in res.stderr and "already serves this workspace" in res.stderr


# --- in-process, no service -------------------------------------------------------------------------------
def _queued_row(settings, download_id: str, state: DownloadState) -> None:
    with Store(settings.db_path) as store:
        store.upsert(download_id, source="https://example.invalid/f.bin", dest=f"loras/{download_id}.safetensors")
        if state != DownloadState.QUEUED:
            store.transition(download_id, state, "test setup")


def test_actions_without_a_service_change_the_state_db(settings):
    settings.state_dir.mkdir(parents=True)
    _queued_row(settings, "q", DownloadState.QUEUED)
    part = settings.models_dir / "loras" / "q.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"partial")
    res = run_cli(settings, "pause", "q")
    assert res.returncode == 0, res.stderr
    assert "paused q" in res.stdout and state_of(settings, "q") == "paused"
    res = run_cli(settings, "resume", "q")
    assert res.returncode == 0 and state_of(settings, "q") == "queued"
    assert "no service runs" in res.stdout
    res = run_cli(settings, "cancel", "q")
    assert res.returncode == 0
    assert state_of(settings, "q") == "failed" and row(settings, "q")["error"] == "cancelled by user"
    assert not part.exists()
    res = run_cli(settings, "retry", "all")
    assert res.returncode == 0 and "retry: 1 download(s)" in res.stdout and state_of(settings, "q") == "queued"
    res = run_cli(settings, "pause", "nope")
    assert res.returncode == 2 and "no download with id 'nope'" in res.stderr
    res = run_cli(settings, "cancel", "all")
    assert res.returncode == 2


def test_actions_without_a_service_refuse_while_another_process_owns_the_workspace(settings):
    from downloader.locks import WorkspaceLock

    settings.state_dir.mkdir(parents=True)
    _queued_row(settings, "q", DownloadState.QUEUED)
    with WorkspaceLock(settings.state_dir):
        res = run_cli(settings, "pause", "q")
    assert res.returncode == 1
    assert f"another downloader (pid {os.getpid()})" in res.stderr
    assert state_of(settings, "q") == "queued"


def test_add_without_a_service_fetches_here(settings, cdn, make_blob):
    blob = make_blob(1 << 20)
    cdn.add_file("/z.bin", blob.path)
    res = run_cli(settings, "add", f"{cdn.url}/z.bin", "--dest", "loras/z.safetensors", "--sha256", blob.sha256)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 of 1 file(s) verified in place" in res.stdout
    assert placed(settings, "loras/z.safetensors", blob)


@pytest.mark.parametrize("command", ["add", "pause", "resume", "retry", "cancel"])
def test_new_commands_have_help_with_an_example(settings, command):
    res = run_cli(settings, command, "--help")
    assert res.returncode == 0 and "Usage:" in res.stdout and "Example:" in res.stdout
