"""The `downloader` command as a user runs it: a real process, real aria2c, loopback servers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from downloader.state import Store
from tests.conftest import run_cli, start_cli, wait_for
from tests.servers import FakeHub, FileServer

TOKEN = "hf_FAKE-token-for-tests-only-abcdefghijklmnop"



def bytes_done(settings, download_id: str) -> int:
    if not settings.db_path.exists():
        return 0
    with Store(settings.db_path) as store:
        row = store.get(download_id)
        return row.bytes_done if row else 0


def kill_everything(settings, proc) -> None:
    """kill -9 of the CLI and of its aria2c, as a pod that is stopped does."""
    owner = json.loads((settings.state_dir / "owner.lock").read_text())
    os.killpg(proc.pid, signal.SIGKILL)
    os.kill(owner["aria2_pid"], signal.SIGKILL)
    proc.wait(10)


def test_fetch_prints_progress_and_exits_zero_when_all_verified(settings, cdn, make_blob, one_model):
    blob = make_blob(3 << 20)
    cdn.add_file("/m.bin", blob.path)
    path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors", blob.sha256)
    res = run_cli(settings, "fetch", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "done m -> loras/m.safetensors" in res.stdout
    assert "1 of 1 file(s) verified in place" in res.stdout
    status = run_cli(settings, "status", "--json")
    [row] = json.loads(status.stdout)
    assert row["state"] == "done" and row["verified"] is True and row["bytes_done"] == blob.size


@pytest.mark.shared_volume  # also on a real MooseFS: a RunPod network volume
def test_kill_9_mid_download_then_resume_fetches_little_again(settings, make_blob, one_model):
    blob = make_blob(48 << 20)
    per_connection = 2_000_000
    with FileServer(rate_limit=per_connection) as cdn:
        cdn.add_file("/m.bin", blob.path)
        path = one_model(f"{cdn.url}/m.bin", "diffusion_models/m.safetensors", blob.sha256)
        proc = start_cli(settings, "fetch", str(path))
        wait_for(lambda: bytes_done(settings, "m") >= blob.size // 2, "half the file", 60, proc)
        kill_everything(settings, proc)
        part = settings.models_dir / "diffusion_models/m.safetensors.part"
        assert part.exists() and not (settings.models_dir / "diffusion_models/m.safetensors").exists()
        cdn.wait_idle()
        first = cdn.bytes_sent()
        res = run_cli(settings, "fetch", str(path))
        assert res.returncode == 0, res.stdout + res.stderr
        cdn.wait_idle()
        total = cdn.bytes_sent()
    assert (settings.models_dir / "diffusion_models/m.safetensors").read_bytes() == blob.data
    refetched = total - blob.size
    one_second = settings.connections * per_connection
    assert first >= blob.size // 2
    assert refetched <= one_second, f"fetched {refetched} bytes twice; one second of transfer is {one_second}"


def test_sigterm_stops_cleanly_and_the_next_run_resumes(settings, make_blob, one_model):
    blob = make_blob(24 << 20)
    with FileServer(rate_limit=1_000_000) as cdn:
        cdn.add_file("/m.bin", blob.path)
        path = one_model(f"{cdn.url}/m.bin", "vae/m.safetensors", blob.sha256)
        proc = start_cli(settings, "fetch", str(path))
        wait_for(lambda: bytes_done(settings, "m") > 2 << 20, "some progress", 60, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signal.SIGTERM, out
        assert "run the same command again to resume" in out
        with Store(settings.db_path) as store:
            assert store.get("m").state == "queued"
        res = run_cli(settings, "fetch", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert (settings.models_dir / "vae/m.safetensors").read_bytes() == blob.data


def test_token_reaches_the_hub_but_never_logs_urls_or_process_lists(settings, make_blob, one_model):
    blob = make_blob(16 << 20)
    with FileServer(host="127.0.0.2", rate_limit=2_000_000) as cdn:
        cdn.sign_required = True
        with FakeHub(cdn=cdn) as hub:
            hub.gate("Org/Gated", TOKEN)
            hub.add_file("Org/Gated", "m.safetensors", blob.path)
            path = one_model("hf://Org/Gated/m.safetensors", "loras/gated.safetensors", id="gated")
            proc = start_cli(settings, "fetch", str(path), HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
            wait_for(lambda: bytes_done(settings, "gated") > 0, "the download to start", 60, proc)
            # while it runs: no process on the machine shows the token (or the RPC secret) in its arguments
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                assert TOKEN not in cmdline
                assert "rpc-secret" not in cmdline
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out
            authorised = [r for r in hub.requests if r.headers.get("authorization") == f"Bearer {TOKEN}"]
    assert authorised, "the token must actually be sent to the hub"
    assert TOKEN not in out
    for file in settings.workspace.rglob("*"):
        if file.is_file() and file.suffix != ".safetensors":
            assert TOKEN.encode() not in file.read_bytes(), f"token written to {file}"
    assert all(TOKEN not in r.path + r.query for r in hub.requests + cdn.requests), "token in a URL"


def test_gated_repo_without_token_fails_with_a_hint_before_downloading(settings, hub, make_blob, one_model):
    blob = make_blob(1 << 20)
    hub.gate("Org/Gated", TOKEN)
    hub.add_file("Org/Gated", "m.safetensors", blob.path)
    path = one_model("hf://Org/Gated/m.safetensors", "loras/gated.safetensors", id="gated")
    res = run_cli(settings, "fetch", str(path), HF_ENDPOINT=hub.url)
    assert res.returncode == 1
    assert "HF_TOKEN" in res.stderr and "FAILED gated" in res.stderr
    assert hub.cdn.bytes_sent() == 0


def test_verify_finds_a_corrupted_file_moves_it_aside_and_fetch_repairs(settings, cdn, make_blob, one_model):
    blob = make_blob(2 << 20)
    cdn.add_file("/m.bin", blob.path)
    path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors", blob.sha256)
    assert run_cli(settings, "fetch", str(path)).returncode == 0
    assert run_cli(settings, "verify").returncode == 0
    dest = settings.models_dir / "loras/m.safetensors"
    with open(dest, "r+b") as fh:  # one flipped byte, as a bad disk would
        fh.seek(12345)
        byte = fh.read(1)
        fh.seek(12345)
        fh.write(bytes([byte[0] ^ 0xFF]))
    res = run_cli(settings, "verify", "--json")
    assert res.returncode == 1
    [result] = json.loads(res.stdout)
    assert result["result"] == "mismatch" and f"expected {blob.sha256}" in result["message"]
    assert not dest.exists(), "ComfyUI must not keep loading a corrupt file"
    assert len(list(dest.parent.glob("m.safetensors.corrupt-*"))) == 1
    assert run_cli(settings, "fetch", str(path)).returncode == 0
    assert dest.read_bytes() == blob.data


def test_plan_shows_what_would_download_and_refuses_a_too_small_disk(settings, cdn, make_blob, manifest, tmp_path):
    blob = make_blob(1 << 20)
    cdn.add_file("/small.bin", blob.path)
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as fh:
        fh.truncate(4 << 40)  # sparse
    cdn.add_file("/huge.bin", huge)
    path = manifest(f"""
        models:
          - id: small
            source: {cdn.url}/small.bin
            dest: loras/small.safetensors
            sha256: {blob.sha256}
          - id: huge
            source: {cdn.url}/huge.bin
            dest: diffusion_models/huge.safetensors
    """)
    res = run_cli(settings, "plan", str(path), "--only", "small")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "small" in res.stdout and "download" in res.stdout and "1.0 MiB" in res.stdout
    res = run_cli(settings, "plan", str(path))
    assert res.returncode == 1
    assert "not enough disk space" in res.stderr and "short by" in res.stderr
    res = run_cli(settings, "fetch", str(path))
    assert res.returncode == 1 and "not enough disk space" in res.stderr
    assert cdn.bytes_sent() == 0 and not settings.models_dir.exists() or not any(settings.models_dir.rglob("*.part"))


def test_missing_aria2c_is_one_clear_error(settings, cdn, make_blob, one_model):
    blob = make_blob(1 << 10)
    cdn.add_file("/m.bin", blob.path)
    path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors")
    res = run_cli(settings, "fetch", str(path), ARIA2C="/nonexistent/aria2c")
    assert res.returncode == 1
    assert "aria2c not found" in res.stderr and "apt-get install aria2" in res.stderr
    assert "Traceback" not in res.stderr


def test_second_fetch_on_a_busy_workspace_says_who_owns_it(settings, make_blob, one_model):
    blob = make_blob(8 << 20)
    with FileServer(rate_limit=500_000) as cdn:
        cdn.add_file("/m.bin", blob.path)
        path = one_model(f"{cdn.url}/m.bin", "loras/m.safetensors")
        first = start_cli(settings, "fetch", str(path))
        wait_for(lambda: bytes_done(settings, "m") > 0, "the first fetch to start", 60, first)
        res = run_cli(settings, "fetch", "--no-wait", str(path))
        assert res.returncode == 1
        assert f"another downloader (pid {first.pid})" in res.stderr
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(30)


@pytest.mark.parametrize("args", [["--help"], ["fetch", "--help"], ["plan", "--help"], ["status", "--help"],
                                  ["verify", "--help"], ["presets", "--help"]])
def test_every_command_has_help_with_an_example(settings, args):
    res = run_cli(settings, *args)
    assert res.returncode == 0
    assert "Usage:" in res.stdout
    if args != ["--help"]:
        assert "Example:" in res.stdout
