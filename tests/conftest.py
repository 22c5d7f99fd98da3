"""Fixtures: a workspace in tmp, real loopback servers, a real aria2c, and the CLI as a real process."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from downloader.config import Settings
from tests.moosefs import (
    MooseFS,
    MooseFSUnavailable,
    moosefs_unavailable,
    running_moosefs,
)
from tests.servers import FakeHub, FileServer

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Blob:
    """A random file on disk and its facts."""

    path: Path
    size: int
    sha256: str

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


@pytest.fixture
def make_blob(tmp_path: Path):
    """make_blob(size, name=None) -> Blob with random content."""
    folder = tmp_path / "blobs"
    folder.mkdir()

    def make(size: int, name: str | None = None) -> Blob:
        path = folder / (name or f"blob-{size}-{len(list(folder.iterdir()))}.bin")
        h = hashlib.sha256()
        with open(path, "wb") as fh:
            left = size
            while left:
                chunk = os.urandom(min(left, 4 << 20))
                h.update(chunk)
                fh.write(chunk)
                left -= len(chunk)
        return Blob(path, size, h.hexdigest())

    return make


@pytest.fixture
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The pod's workspace: a folder in tmp; for a test marked `shared_volume`, also one on a real MooseFS. There a
    file the test process left open fails the test: an open file on a FUSE mount makes its unmount hang for
    minutes at the end of the session (mfsmount waits out the file's locks), which is how it was found."""
    if getattr(request, "param", "local") != "moosefs":
        ws = tmp_path / "ws"
        ws.mkdir()
        yield ws
        return
    folder = request.getfixturevalue("moosefs").folder(request.node.name)
    yield folder
    gc.collect()  # connections nobody closed are closed when collected
    left = open_files_under(folder)
    for fd in left:
        with contextlib.suppress(OSError):
            os.close(fd)
    assert not left, f"the test left files open on the volume: {sorted(left.values())}"


def open_files_under(folder: Path) -> dict[int, str]:
    """This process's open file descriptors on files under `folder`: fd -> path."""
    found = {}
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target == str(folder) or target.startswith(f"{folder}/"):
                found[int(entry.name)] = target
    return found


@contextlib.contextmanager
def plain_db(path: Path, **kwargs: Any) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection that is committed and closed at the end (sqlite3's own `with` only commits)."""
    conn = sqlite3.connect(path, **kwargs)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


# --- a RunPod network volume: a real MooseFS mounted twice (tests/moosefs.py) ------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shared_volume: run the test twice, with its `workspace` in tmp and on a real MooseFS (a RunPod network "
        "volume; tests/moosefs.py)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("shared_volume") and "workspace" in metafunc.fixturenames:
        metafunc.parametrize("workspace", ["local", "moosefs"], indirect=True)


@pytest.fixture(scope="session")
def moosefs() -> Iterator[MooseFS]:
    """One MooseFS volume for the session, mounted twice (`.mount_a`, `.mount_b`: two pods); `.folder(name)` gives a
    new folder on it. Skips where the machine cannot run it (not root, no `ip`, /dev/fuse or MooseFS packages)."""
    reason = moosefs_unavailable()
    if reason:
        pytest.skip(f"no MooseFS: {reason}")
    try:
        with running_moosefs() as fs:
            yield fs
    except MooseFSUnavailable as e:
        pytest.skip(f"no MooseFS: {e}")


def test_settings(workspace: Path, **changes: Any) -> Settings:
    """Settings for a tmp workspace, tuned so retries and stalls happen in test time."""
    return Settings(
        workspace=workspace,
        models_dir=workspace / "ComfyUI" / "models",
        state_dir=workspace / ".downloader",
        manifest_dirs=(),
        connections=4,
        min_split_size="1M",
        retry_base_seconds=0.2,
        stall_seconds=5.0,
        poll_interval=0.1,
    ).with_(**changes)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture
def settings(workspace: Path) -> Settings:
    return test_settings(workspace)


@pytest.fixture
def cdn() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


@pytest.fixture
def manifest(tmp_path: Path):
    """manifest(yaml_text) -> path of a manifest file holding it."""
    counter = [0]

    def write(text: str) -> Path:
        counter[0] += 1
        path = tmp_path / f"manifest-{counter[0]}.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def one_model(manifest):
    """one_model(source, dest, sha256=None, id="m") -> a manifest with that single model."""

    def write(source: str, dest: str, sha256: str | None = None, id: str = "m") -> Path:  # noqa: A002
        pin = f"\n    sha256: {sha256}" if sha256 else ""
        return manifest(f"models:\n  - id: {id}\n    source: {source}\n    dest: {dest}{pin}\n")

    return write


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a user would set for this workspace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DOWNLOADER_", "ARIA2"))}
    env.update(
        WORKSPACE=str(settings.workspace),
        MODELS_DIR=str(settings.models_dir),
        DOWNLOADER_STATE=str(settings.state_dir),
        DOWNLOADER_MANIFESTS=str(settings.workspace / "no-shipped-manifests"),
        ARIA2_CONNECTIONS=str(settings.connections),
        ARIA2_MIN_SPLIT_SIZE=settings.min_split_size,
        DOWNLOADER_RETRY_SECONDS=str(settings.retry_base_seconds),
        DOWNLOADER_STALL_SECONDS=str(settings.stall_seconds),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def run_cli(settings: Settings, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m downloader ARGS` as a real process and capture what the user sees."""
    return subprocess.run(
        [sys.executable, "-m", "downloader", *args],
        env=cli_env(settings, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start `python -m downloader ARGS` in the background (for kill -9 and ps checks)."""
    return subprocess.Popen(
        [sys.executable, "-m", "downloader", *args],
        env=cli_env(settings, **env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


# --- browsers: Debian's Chromium driven by playwright (which never downloads a browser of its own) ----------
CHROMIUM = Path("/usr/bin/chromium")
# As root, without a sandbox; no background traffic (the machine has no internet and would refuse it noisily).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (playwright's sync API holds an event loop while it runs)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium): no browser to drive")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve a WSGI app with waitress (the production server) on a free loopback port; yields its base URL."""
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    stop = threading.Event()

    def run() -> None:
        # waitress's own run() loops until its sockets are gone; closing them under its select() from this thread
        # raises EBADF there. So the loop checks a flag between short rounds and the sockets close after it ends.
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)

    thread = threading.Thread(target=run, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stop.set()
        thread.join(5)
        server.close()
        server.task_dispatcher.shutdown()


@pytest.fixture
def expected_failures() -> list[str]:
    """URL parts of GETs a test makes fail on purpose."""
    return []


@pytest.fixture
def page(browser: Any, expected_failures: list[str]) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280 px, dark; fails the test on a JavaScript error or a failed GET
    (unless a test lists it in `expected_failures`). POSTs answered 4xx are expected (a wrong password, a refused
    download): Chromium logs them as console errors "Failed to load resource", so those lines are left out."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on(
        "console",
        lambda m: (
            errors.append(f"console: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    pg.on(
        "response",
        lambda r: errors.append(f"GET {r.url} -> {r.status}") if r.request.method == "GET" and r.status >= 400 else None,
    )
    yield pg
    context.close()
    errors = [e for e in errors if not any(part in e for part in expected_failures)]
    assert errors == [], errors


def wait_for(condition: Callable[[], Any], what: str = "condition", timeout: float = 60.0, proc: Any = None) -> Any:
    """Poll `condition` until it gives something true and return that; after `timeout` s fail naming `what` and, for a
    process started in the background (`proc`, in its own process group), with what it printed."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            output = ""
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                output = proc.communicate(timeout=10)[0]
            raise AssertionError(f"timed out waiting for {what}" + (f"; the process printed:\n{output}" if proc else ""))
        time.sleep(0.05)
    return value


def wait_service_started(svc: Any, timeout: float = 60.0) -> None:
    """Wait for a started DownloadService's start-up work, which runs in its background thread: the workspace lock,
    the models folder, aria2c answering. Done once the lock file names aria2's pid (recorded after all that).
    Tests that snapshot the workspace wait for this first, or they see the models folder appear. Then the loop's
    first tick: `health()` ok, so /healthz answers 200 and commands are answered at once."""
    import time

    deadline = time.monotonic() + timeout
    while not (svc.running and "aria2_pid" in svc.manager.lock.owner() and svc.health().ok):
        assert svc.fatal is None, f"the service could not start: {svc.fatal}"
        assert time.monotonic() < deadline, f"the service did not start in {timeout:.0f} s ({svc.owner_note})"
        time.sleep(0.05)


@dataclass
class ServiceProcess:
    """`python -m downloader serve` running as its own process for a test workspace."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path  # what it printed (stdout and stderr)

    def api(self, method: str, path: str, password: str, body: Any = None) -> tuple[int, Any]:
        """One call to its JSON API with `Authorization: Bearer <password>`, as a script would make it."""
        import http.client
        import json

        headers = {"Authorization": f"Bearer {password}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            res = conn.getresponse()
            raw = res.read()
        finally:
            conn.close()
        return res.status, (json.loads(raw) if raw else None)


@contextmanager
def service_process(settings: Settings, log: Path, timeout: float = 60.0, **env: str) -> Iterator[ServiceProcess]:
    """Start the service on a free loopback port; yield once /healthz answers; SIGTERM it (then kill) at the end."""
    import http.client
    import signal
    import time

    from downloader.aria2 import free_port

    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "downloader", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=cli_env(settings, **env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"the service exited ({proc.returncode}):\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the service did not answer in {timeout:.0f} s:\n{log.read_text()}"
            time.sleep(0.05)
        yield ServiceProcess(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
