"""entrypoint.py as the container runs it: a real process, the real downloader service, stand-in ComfyUI/Jupyter."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from downloader.aria2 import free_port
from downloader.config import PodSettings, Settings
from downloader.pod import entrypoint as entrypoint_mod
from downloader.pod.supervisor import Supervisor
from downloader.state import Store
from tests.conftest import REPO
from tests.servers import FileServer

STANDIN = f"{sys.executable} {REPO / 'tests' / 'standins' / 'service.py'}"


def held_build(go: Path) -> str:
    """A SageAttention build that runs until the test creates `go`: "still building" lasts as long as a test needs."""
    return f"while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.1; done; echo built"


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped yet: it holds no port and no lock)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def get(port: int, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET on loopback; (0, error) if nothing answers."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"entrypoint exited ({proc.returncode}) while waiting for {what}:\n{read_out(proc)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def read_out(proc: subprocess.Popen) -> str:
    try:
        return proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        return "(still running)"


class Pod:
    """One entrypoint process with its ports, workspace and stand-ins."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.ws = tmp / "ws"
        self.image = tmp / "image"
        self.ports = {name: free_port() for name in ("COMFYUI_PORT", "JUPYTER_PORT", "DOWNLOADER_PORT")}
        self.standin_log = tmp / "standins.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DOWNLOADER_", "MODEL_"))}
        self.env.update(
            WORKSPACE=str(self.ws),
            COMFYUI_IMAGE_DIR=str(self.image),
            COMFYUI_CMD=f"{STANDIN} --name comfyui",
            JUPYTER_CMD=f"{STANDIN} --name jupyterlab",
            SAGEATTENTION_CMD="echo built",
            CUSTOM_NODES="",
            MODEL_PRESETS="none",
            DOWNLOADER_MANIFESTS=str(tmp / "manifests"),
            DOWNLOADER_PASSWORD="pw",
            STANDIN_LOG=str(self.standin_log),
            STOP_GRACE_SECONDS="5",
            PYTHONUNBUFFERED="1",
            **{k: str(v) for k, v in self.ports.items()},
        )
        self.env.update(env)
        (tmp / "manifests").mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def port(self, name: str) -> int:
        return self.ports[f"{name.upper()}_PORT"]

    def start(self) -> subprocess.Popen:
        self.proc = subprocess.Popen([sys.executable, str(REPO / "entrypoint.py")], env=self.env, cwd=self.tmp,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        return self.proc

    def stop(self) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out = read_out(self.proc)
        return self.proc.returncode, out

    def components(self, pod: str | None = None) -> dict[str, tuple[str, str | None]]:
        """(state, message) of each installation step: one pod's, or the newest report of any pod (each start
        without RUNPOD_POD_ID is a pod of its own)."""
        db = self.ws / ".downloader" / "state.db"
        if not db.exists():
            return {}
        with Store(db) as store:
            rows = sorted(store.components(pod), key=lambda c: c.updated_at)
            return {c.name: (c.state, c.message) for c in rows}

    def started(self, name: str) -> int:
        if not self.standin_log.exists():
            return 0
        return sum(1 for line in self.standin_log.read_text().splitlines() if line.startswith(name + " "))


@pytest.fixture
def pod(tmp_path):
    pods: list[Pod] = []

    def make(**env: str) -> Pod:
        p = Pod(tmp_path, **env)
        pods.append(p)
        return p

    yield make
    for p in pods:
        if p.proc is not None and p.proc.poll() is None:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()


def test_comfyui_waits_for_required_models_then_starts_right_away(pod, make_blob):
    required, optional = make_blob(6 << 20), make_blob(1 << 20)
    with FileServer(rate_limit=500_000) as cdn:  # ~3 s for the required file: time to look at the gate
        cdn.add_file("/req.bin", required.path)
        cdn.add_file("/opt.bin", optional.path)
        # The optional model never finishes while the pod runs: every GET of it stalls (until the CDN stops).
        cdn.stall_next(10_000, seconds=3600, path="/opt.bin", after_bytes=1000)
        p = pod(MODEL_PRESETS="wan-test", ARIA2_CONNECTIONS="2")
        (p.tmp / "manifests" / "test.yaml").write_text(f"""
presets:
  wan-test: [req, opt]
models:
  - id: req
    source: {cdn.url}/req.bin
    dest: diffusion_models/req.safetensors
    sha256: {required.sha256}
  - id: opt
    source: {cdn.url}/opt.bin
    dest: loras/opt.safetensors
    sha256: {optional.sha256}
    required: false
""")
        proc = p.start()
        # the web UI and JupyterLab answer before any model is present
        wait_until(lambda: get(p.port("downloader"), "/healthz")[0] == 200, 30, "8765", proc)
        wait_until(lambda: get(p.port("jupyter"))[0] == 200, 30, "jupyter", proc)
        dest = p.ws / "ComfyUI" / "models" / "diffusion_models" / "req.safetensors"
        assert not dest.exists()
        status, page = get(p.port("comfyui"))
        assert status == 503 and "req" in page and "ComfyUI starts when its models are verified" in page
        assert f":{p.port('downloader')}/" in page, "the placeholder links to the downloader"
        assert p.started("comfyui") == 0
        # ComfyUI starts right after the required model is verified in place
        wait_until(dest.exists, 60, "the required model", proc)
        wait_until(lambda: get(p.port("comfyui"))[0] == 200, 60, "ComfyUI", proc)
        # Order, not timing: ComfyUI came up after the required model was verified, and while the optional
        # one was still held back by the CDN (so nothing but the required models is waited for).
        with Store(p.ws / ".downloader" / "state.db") as store:
            req_row, opt_row = store.get("req"), store.get("opt")
        assert req_row.state == "done" and req_row.finished_at is not None
        assert opt_row.state != "done", "ComfyUI must not wait for an optional model"
        assert not (p.ws / "ComfyUI" / "models" / "loras" / "opt.safetensors").exists()
        comfy_started = float(next(line for line in p.standin_log.read_text().splitlines()
                                   if line.startswith("comfyui ")).split()[2])
        verified_at = req_row.finished_at.replace(tzinfo=timezone.utc)
        assert datetime.fromtimestamp(comfy_started, timezone.utc) >= verified_at, "started after verification"
        assert get(p.port("comfyui"))[1].startswith("ok comfyui")
        wait_until(lambda: p.components().get("comfyui", ("",))[0] == "done", 10, "comfyui component", proc)
        code, out = p.stop()
    assert code == 128 + signal.SIGTERM, out
    assert "[comfyui] comfyui starting" in out, "children's output reaches the container log, prefixed"
    assert (p.ws / "logs" / "comfyui.log").read_text().startswith("comfyui starting")


def test_comfyui_never_starts_while_a_required_model_is_unverified(pod, make_blob, tmp_path):
    blob = make_blob(1 << 20)
    with FileServer() as cdn:
        cdn.add_file("/m.bin", make_blob(1 << 20).path)  # the server has other bytes: checksum mismatch
        # A background build the test ends: its end is noticed by the entrypoint's loop, which then runs the
        # ComfyUI gate in the same pass. So once it is reported done, the gate has seen the failed model.
        go = tmp_path / "build-go"
        p = pod(MODEL_PRESETS="p", DOWNLOADER_MAX_ATTEMPTS="1", INSTALL_SAGEATTENTION="background",
                SAGEATTENTION_CMD=held_build(go))
        (p.tmp / "manifests" / "m.yaml").write_text(
            f"presets:\n  p: [m]\nmodels:\n  - id: m\n    source: {cdn.url}/m.bin\n"
            f"    dest: vae/m.safetensors\n    sha256: {blob.sha256}\n")
        proc = p.start()
        wait_until(lambda: "checksum mismatch" in get(p.port("comfyui"))[1], 60, "the failure on the placeholder", proc)
        go.touch()
        wait_until(lambda: p.components().get("sageattention", ("",))[0] == "done", 30, "the loop's next pass", proc)
        assert p.started("comfyui") == 0 and get(p.port("comfyui"))[0] == 503
        assert not (p.ws / "ComfyUI" / "models" / "vae" / "m.safetensors").exists()
        _, out = p.stop()
    # The pass that reported the build done ran the gate before the loop could see the SIGTERM.
    assert "[entrypoint] comfyui: running" not in out and p.started("comfyui") == 0, out


@pytest.mark.parametrize("mode", ["true", "background", "false"])
def test_sageattention_modes(pod, tmp_path, mode):
    go = tmp_path / "build-go"  # the build runs until the test creates this file
    p = pod(INSTALL_SAGEATTENTION=mode, SAGEATTENTION_CMD=held_build(go))
    proc = p.start()
    wait_until(lambda: get(p.port("downloader"), "/healthz")[0] == 200, 30, "8765", proc)
    if mode == "true":
        # The loop announced the web UI, and ran the ComfyUI gate in that pass, while the build was held.
        wait_until(lambda: p.components().get("downloader", ("",))[0] == "done", 30, "the loop's announcement", proc)
        assert p.started("comfyui") == 0, "INSTALL_SAGEATTENTION=true holds ComfyUI until the build is done"
        assert p.components()["sageattention"][0] == "running"
        go.touch()
        wait_until(lambda: p.components().get("sageattention", ("",))[0] == "done", 30, "the build", proc)
        wait_until(lambda: get(p.port("comfyui"))[0] == 200, 30, "ComfyUI after the build", proc)
    elif mode == "background":
        wait_until(lambda: get(p.port("comfyui"))[0] == 200, 30, "ComfyUI", proc)
        assert p.components()["sageattention"][0] == "running", "the build goes on in the background"
        go.touch()
        wait_until(lambda: p.components().get("sageattention", ("",))[0] == "done", 30, "the build", proc)
    else:
        wait_until(lambda: get(p.port("comfyui"))[0] == 200, 30, "ComfyUI", proc)
        assert p.components()["sageattention"] == ("skipped", "INSTALL_SAGEATTENTION=false")
    _, out = p.stop()
    if mode == "true":
        # In the container log the build ends before ComfyUI is started, never the other way round.
        assert out.index("[entrypoint] sageattention: done") < out.index("[entrypoint] comfyui: running"), out


def test_crashing_service_restarts_with_backoff_then_gives_up(pod):
    p = pod(COMFYUI_CMD=f"{STANDIN} --name comfyui --exit-code 3", SERVICE_MAX_RESTARTS="2")
    proc = p.start()
    wait_until(lambda: p.components().get("comfyui", ("",))[0] == "failed", 30, "comfyui to be given up", proc)
    _state, message = p.components()["comfyui"]
    assert "exited with code 3; gave up after 2 restarts" in message
    starts = [float(line.split()[2]) for line in p.standin_log.read_text().splitlines() if line.startswith("comfyui")]
    assert len(starts) == 3  # the first start and two restarts
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, f"restarts must back off (1 s, then 2 s): {gaps}"
    wait_until(lambda: get(p.port("downloader"), "/healthz")[0] == 200, 30, "8765 unaffected", proc)
    p.stop()


def test_sigterm_stops_every_child_and_exits_143(pod):
    p = pod()
    proc = p.start()
    wait_until(lambda: get(p.port("comfyui"))[0] == 200, 30, "ComfyUI", proc)
    wait_until(lambda: get(p.port("downloader"), "/healthz")[0] == 200, 30, "8765", proc)
    pids = [int(line.split()[1]) for line in p.standin_log.read_text().splitlines()]
    code, out = p.stop()
    assert code == 143, out
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    for port in p.ports.values():
        assert get(port)[0] == 0, f"port {port} still answers after the stop"


def test_workspace_persistence_move_then_link(pod):
    p = pod(DOWNLOADER_POD_ID="first-pod")
    p.image.mkdir()
    (p.image / "main.py").write_text("# ComfyUI from the image\n")
    proc = p.start()
    wait_until(lambda: p.components("first-pod").get("workspace", ("",))[0] == "done", 30, "persistence", proc)
    comfy = p.ws / "ComfyUI"
    assert (comfy / "main.py").read_text() == "# ComfyUI from the image\n"
    assert p.image.is_symlink() and p.image.resolve() == comfy.resolve()
    (comfy / "custom_nodes").mkdir(exist_ok=True)
    (comfy / "custom_nodes" / "mine").mkdir()  # the user installs a node in the first pod
    p.stop()
    # a new pod from the same image: /ComfyUI is the image's pristine copy again, the workspace is kept
    p.image.unlink()
    p.image.mkdir()
    (p.image / "main.py").write_text("# pristine\n")
    p.env["DOWNLOADER_POD_ID"] = "second-pod"  # another pod on the same volume
    proc = p.start()
    wait_until(lambda: p.components("second-pod").get("workspace", ("",))[0] == "done", 30, "the link", proc)
    assert p.image.is_symlink()
    assert (p.image / "custom_nodes" / "mine").is_dir() and (p.image / "main.py").read_text().startswith("# ComfyUI")
    assert "linked" in p.components("second-pod")["workspace"][1]
    assert "first run: moved" in p.components("first-pod")["workspace"][1], "the first pod's report is kept"
    p.stop()


def node_repo(repo: Path) -> Path:
    """A git repository with one commit holding a custom node's __init__.py."""
    repo.mkdir(parents=True)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    (repo / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "node"], check=True)
    return repo


def test_custom_nodes_cloned_when_missing_and_a_failure_blocks_nothing(pod, tmp_path):
    repo = node_repo(tmp_path / "nodes" / "GoodNode")
    p = pod(CUSTOM_NODES=f"file://{repo},file://{tmp_path}/nodes/Missing")
    proc = p.start()
    wait_until(lambda: p.components().get("custom nodes", ("",))[0] in ("done", "failed"), 30, "nodes", proc)
    state, message = p.components()["custom nodes"]
    assert state == "failed" and "Missing" in message and "ComfyUI starts anyway" in message
    assert (p.ws / "ComfyUI" / "custom_nodes" / "GoodNode" / "__init__.py").exists()
    assert not (p.ws / "ComfyUI" / "custom_nodes" / "Missing").exists()
    wait_until(lambda: get(p.port("comfyui"))[0] == 200, 20, "ComfyUI despite the failed node", proc)
    p.stop()


class ThreadRecordingSupervisor(Supervisor):
    """A real Supervisor that notes which thread calls each method that starts, watches or stops children."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.callers: list[tuple[str, str]] = []  # (method, thread name)

    def start(self, spec):
        self.callers.append(("start", threading.current_thread().name))
        return super().start(spec)

    def tick(self) -> None:
        self.callers.append(("tick", threading.current_thread().name))
        super().tick()

    def stop_all(self, grace: float = 10.0) -> None:
        self.callers.append(("stop_all", threading.current_thread().name))
        super().stop_all(grace)


def test_one_thread_drives_the_supervisor_while_custom_nodes_are_cloned(pod, tmp_path, monkeypatch):
    """The entrypoint in this process (its loop in this thread): every start, tick and stop comes from here."""
    good = node_repo(tmp_path / "nodes" / "GoodNode")
    p = pod(CUSTOM_NODES=f"file://{good},file://{tmp_path}/nodes/Missing")
    for key in [k for k in os.environ if k.startswith(("HF_", "DOWNLOADER_", "MODEL_"))]:
        monkeypatch.delenv(key)
    for key, value in p.env.items():  # the children (service, stand-ins, git) inherit the pod's environment
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(entrypoint_mod, "Supervisor", ThreadRecordingSupervisor)
    ep = entrypoint_mod.Entrypoint(PodSettings.from_env(), Settings.from_env())

    def stop_once_the_nodes_are_installed() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and p.components().get("custom nodes", ("",))[0] not in ("done", "failed"):
            time.sleep(0.1)
        ep.stop_event.set()  # what SIGTERM does

    watcher = threading.Thread(target=stop_once_the_nodes_are_installed, name="test-watcher", daemon=True)
    watcher.start()
    assert ep.run() == 0
    watcher.join()
    state, message = p.components()["custom nodes"]
    assert state == "failed" and "Missing" in message, "both clones ran to their end"
    assert (p.ws / "ComfyUI" / "custom_nodes" / "GoodNode" / "__init__.py").exists()
    assert not (p.ws / "ComfyUI" / "custom_nodes" / "Missing").exists()
    assert {ep.sup.children[n].state for n in ("node-GoodNode", "node-Missing")} == {"done", "failed"}
    started = [name for method, name in ep.sup.callers if method == "start"]
    assert len(started) >= 4 and any(method == "tick" for method, _ in ep.sup.callers)
    assert {name for _, name in ep.sup.callers} == {threading.current_thread().name}, ep.sup.callers


def test_a_service_that_ran_stable_seconds_gets_its_restarts_back(pod):
    # Each run lasts 1.5 s then crashes; with SERVICE_STABLE_SECONDS=1 every run counts as a recovery, so
    # SERVICE_MAX_RESTARTS=1 (one restart in a row) never runs out.
    crash_later = 'echo "comfyui $$" >> "$STANDIN_LOG"; sleep 1.5; exit 3'
    p = pod(COMFYUI_CMD=crash_later, SERVICE_MAX_RESTARTS="1", SERVICE_STABLE_SECONDS="1")
    proc = p.start()

    def gave_up() -> bool:
        return p.components().get("comfyui", ("",))[0] == "failed"

    wait_until(lambda: p.started("comfyui") >= 4 or gave_up(), 60, "a fourth start of comfyui", proc)
    assert not gave_up(), p.components()["comfyui"]
    _, out = p.stop()
    # Every crash came after a stable run: the backoff starts at 1 s each time and the bound is never reached.
    assert out.count("[entrypoint] comfyui: running: exited with code 3; restarting in 1 s") >= 3, out
    assert "restarting in 2 s" not in out and "gave up" not in out, out


@pytest.mark.parametrize(("bad", "expected"), [
    ("soon", "SERVICE_STABLE_SECONDS='soon' is not a number"),
    ("0", "SERVICE_STABLE_SECONDS=0.0 is out of range (1.0..86400.0)"),
])
def test_a_bad_service_stable_seconds_exits_2_in_one_line(pod, bad, expected):
    p = pod(SERVICE_STABLE_SECONDS=bad)
    proc = p.start()
    out = read_out(proc)
    assert proc.returncode == 2, out
    assert [line for line in out.splitlines() if line.strip()] == [f"[entrypoint] configuration error: {expected}"]


def test_unknown_preset_is_reported_and_the_rest_comes_up(pod):
    p = pod(MODEL_PRESETS="no-such-preset")
    proc = p.start()
    wait_until(lambda: get(p.port("downloader"), "/healthz")[0] == 200, 30, "8765", proc)
    state, message = p.components()["presets"]
    assert state == "failed" and "no-such-preset" in message
    p.stop()


def test_bad_configuration_exits_2_with_the_reason(pod):
    p = pod(INSTALL_SAGEATTENTION="maybe")
    proc = p.start()
    out = read_out(proc)
    assert proc.returncode == 2 and "INSTALL_SAGEATTENTION='maybe'" in out


def test_status_page_shows_the_components(pod):
    p = pod()
    proc = p.start()
    wait_until(lambda: get(p.port("comfyui"))[0] == 200, 30, "ComfyUI", proc)
    wait_until(lambda: get(p.port("downloader"), "/healthz")[0] == 200, 30, "8765", proc)
    _status, body = get(p.port("downloader"), "/api/installation-status", {"Authorization": "Bearer pw"})
    names = {c["name"]: c for c in json.loads(body)["components"]}
    assert {"workspace", "jupyterlab", "downloader", "sageattention", "comfyui"} <= set(names)
    token = (p.ws / ".downloader" / "jupyter-token").read_text().strip()
    assert token in names["jupyterlab"]["message"], "a generated Jupyter token is shown on the status page"
    p.stop()


def test_kill_9_of_everything_then_a_second_start_resumes(pod, make_blob):
    blob = make_blob(12 << 20)
    with FileServer(rate_limit=500_000) as cdn:
        cdn.add_file("/m.bin", blob.path)
        p = pod(MODEL_PRESETS="p", ARIA2_CONNECTIONS="2")
        (p.tmp / "manifests" / "m.yaml").write_text(
            f"presets:\n  p: [m]\nmodels:\n  - id: m\n    source: {cdn.url}/m.bin\n"
            f"    dest: vae/m.safetensors\n    sha256: {blob.sha256}\n")
        proc = p.start()
        part = p.ws / "ComfyUI" / "models" / "vae" / "m.safetensors.part"
        wait_until(lambda: part.exists() and part.stat().st_size > 2 << 20, 60, "progress", proc)
        # kill -9 of everything: the entrypoint, its children and aria2c
        # The service's lock records its pid and aria2c's: `owner.lock`, or `owner-<pod>.lock` for a pod's service.
        lock = next((p.ws / ".downloader").glob("owner*.lock"))
        owner = json.loads(lock.read_text())
        standins = [int(line.split()[1]) for line in p.standin_log.read_text().splitlines()]
        for pid in standins:
            os.kill(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in (owner["pid"], owner["aria2_pid"]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        # Their ports and the workspace lock are free once the killed processes are gone.
        killed = [*standins, owner["pid"], owner["aria2_pid"]]
        wait_until(lambda: all(gone(pid) for pid in killed), 30, "the killed processes to be gone")
        proc = p.start()
        wait_until(lambda: get(p.port("comfyui"))[0] == 200, 90, "ComfyUI after the resumed download", proc)
        p.stop()
        cdn.wait_idle()
        sent = cdn.bytes_sent()
    assert (p.ws / "ComfyUI" / "models" / "vae" / "m.safetensors").read_bytes() == blob.data
    assert sent < blob.size * 1.3, f"the second start fetched too much again: {sent} for {blob.size}"


def test_real_jupyterlab_answers_and_refuses_requests_without_the_token(pod):
    pytest.importorskip("jupyterlab", reason="jupyterlab is a test dependency (pyproject [test])")
    p = pod(JUPYTER_CMD="", JUPYTER_PASSWORD="jupyter-secret-for-tests")
    p.env.pop("JUPYTER_CMD")  # the real default: python -m jupyterlab
    proc = p.start()
    port = p.port("jupyter")
    wait_until(lambda: get(port, "/api/status")[0] in (200, 403), 60, "JupyterLab", proc)
    status, _ = get(port, "/api/status")
    assert status == 403, "JupyterLab must refuse a request without the token"
    status, body = get(port, "/api/status", {"Authorization": "token jupyter-secret-for-tests"})
    assert status == 200 and "started" in json.loads(body)
    status, _ = get(port, "/api/status", {"Authorization": "token wrong"})
    assert status == 403
    with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
        assert b"jupyter-secret-for-tests" not in fh.read()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            assert b"jupyter-secret-for-tests" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
    code, out = p.stop()
    assert code == 143
    assert "jupyter-secret-for-tests" not in out
