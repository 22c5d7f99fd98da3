"""Pods for bench/bench_fleet.py: `downloader serve` processes on a shared workspace, their API, their history.

A pod here is what one RunPod pod runs of this project: `python -m downloader serve` (its own aria2c) with its own
RUNPOD_POD_ID, its workspace on one mount of the shared MooseFS volume. The benchmark starts them, talks to their
JSON API as a script would, kills one with SIGKILL (service and aria2c, as a lost container), and reads the shared
state database afterwards for the exact times (events are stamped by the pods themselves).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float, every: float = 0.1) -> T:
    """Poll `condition` until it returns something truthy (returned); RuntimeError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PodConfig:
    """What every pod of a run is given (the environment a RunPod template would set)."""

    connections: int  # ARIA2_CONNECTIONS
    min_split: str  # ARIA2_MIN_SPLIT_SIZE
    max_concurrent: int  # DOWNLOADER_MAX_CONCURRENT
    lease: float  # DOWNLOADER_CLAIM_LEASE
    password: str  # DOWNLOADER_PASSWORD (in the environment only, never in argv)


class Pod:
    """`python -m downloader serve` on `workspace` as pod `name`; a context manager that always stops it."""

    def __init__(self, name: str, workspace: Path, config: PodConfig, log: Path) -> None:
        self.name, self.workspace, self.config, self.log = name, workspace, config, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed_at: float | None = None

    @property
    def state_dir(self) -> Path:
        return self.workspace / ".downloader"

    def env(self) -> dict[str, str]:
        c = self.config
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "DOWNLOADER_", "ARIA2", "MODEL_", "RUNPOD_"))}
        env.update(
            WORKSPACE=str(self.workspace),
            DOWNLOADER_MANIFESTS=str(self.workspace / "no-shipped-manifests"),  # only the bench's manifest
            ARIA2_CONNECTIONS=str(c.connections), ARIA2_MIN_SPLIT_SIZE=c.min_split,
            DOWNLOADER_MAX_CONCURRENT=str(c.max_concurrent), DOWNLOADER_CLAIM_LEASE=f"{c.lease:g}",
            DOWNLOADER_PASSWORD=c.password, RUNPOD_POD_ID=self.name, PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> None:
        """Spawn the service (no wait: several pods start side by side; then `wait_ready`)."""
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "downloader", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env(), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 120) -> None:
        """Until /healthz answers 200 (the service's loop runs, aria2c answers)."""
        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"pod {self.name} exited at start:\n{self.tail()}")
            with suppress(OSError):
                return self.call("GET", "/healthz", timeout=2)[0] == 200
            return False

        wait_until(ready, f"pod {self.name} to answer /healthz", timeout, every=0.1)

    def call(self, method: str, path: str, timeout: float = 60) -> tuple[int, Any]:
        """One JSON API call with the fleet's password, as a script would make it."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {self.config.password}"})
            res = conn.getresponse()
            raw = res.read()
        finally:
            conn.close()
        return res.status, (json.loads(raw) if raw else None)

    def downloads(self) -> dict[str, dict[str, Any]]:
        """/api/downloads by id: what this pod's UI shows of the whole fleet's queue."""
        code, data = self.call("GET", "/api/downloads")
        if code != 200:
            raise RuntimeError(f"pod {self.name}: /api/downloads answered {code}: {data}")
        return {d["id"]: d for d in data["downloads"]}

    def start_preset(self, preset: str) -> None:
        code, data = self.call("POST", f"/api/presets/{preset}/start")
        if code != 202:
            raise RuntimeError(f"pod {self.name}: starting preset {preset} answered {code}: {data}")

    def kill9(self) -> float:
        """SIGKILL the service and its aria2c at once (a lost container); returns when it happened."""
        assert self.proc is not None
        owner = json.loads((self.state_dir / f"owner-{self.name}.lock").read_text() or "{}")
        self.killed_at = time.time()
        self.proc.kill()
        if owner.get("aria2_pid"):
            with suppress(ProcessLookupError):
                os.kill(int(owner["aria2_pid"]), signal.SIGKILL)
        self.proc.wait(10)
        return self.killed_at

    def stop(self) -> None:
        """SIGTERM (a clean stop: claims released, aria2c stopped), SIGKILL after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class FileHistory:
    """One file's history in the shared state: who started it, when it was requeued and done (wall clock)."""

    fetchers: list[str]  # the pods that started downloading it, in order (a takeover: two)
    started: list[tuple[float, str]]  # ("downloading ... on pod X" time, message)
    requeued: list[float]  # "pod X stopped (its claim expired)" times
    done: float | None


def history(db: Path, ids: list[str]) -> dict[str, FileHistory]:
    """The files' histories, read from the state database once the pods are stopped."""
    sys.path.insert(0, str(REPO))
    from downloader.state import Store

    def ts(at: dt.datetime) -> float:
        return at.replace(tzinfo=dt.timezone.utc).timestamp()

    out = {}
    with Store(db) as store:
        for i in ids:
            events = list(reversed(store.events(i, limit=1000)))  # oldest first
            started = [(ts(e.at), e.message) for e in events if e.message.startswith("downloading") and " on pod " in e.message]
            out[i] = FileHistory(
                fetchers=[m.rsplit(" on pod ", 1)[1].split()[0] for _, m in started],
                started=started,
                requeued=[ts(e.at) for e in events if "its claim expired" in e.message],
                done=max((ts(e.at) for e in events if e.message.startswith("done")), default=None),
            )
    return out
