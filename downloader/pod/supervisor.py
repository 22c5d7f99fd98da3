"""Child processes for the container's entrypoint: start, log, watch, restart with backoff, stop.

Each child runs in its own session (process group), so a signal reaches its whole tree. Its output goes,
line by line, to `<logs>/<name>.log` and, prefixed with `[name]`, to our stdout (the container's log).
A long-running service that exits is restarted after 1, 2, 4, ... s (at most 30 s), a bounded number of
times; once it has run `stable_seconds` without exiting, that count starts again (a service that crashes
once a day is not given up on after a week). A one-shot job just reports how it ended.

One thread drives a Supervisor: `start`, `tick` and `stop_all` are not made to be called concurrently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..config import child_env

Clock = Callable[[], float]


@dataclass
class Spec:
    """What to run. `cmd` is an argv list, or a string run by /bin/sh (user-supplied command lines)."""

    name: str
    cmd: Sequence[str] | str
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    restart: bool = True  # a service (restart on exit) or a one-shot job
    max_restarts: int = 5  # restarts in a row (runs shorter than stable_seconds) before it is given up on
    stable_seconds: float = 60.0  # a run this long resets the restart count and the backoff


@dataclass
class Child:
    """One running (or finished) process and its restart bookkeeping."""

    spec: Spec
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # restarts since the service last ran stable_seconds
    started_at: float | None = None  # the supervisor's clock when the current run started
    next_start: float | None = None  # when a crashed service may start again
    state: str = "pending"  # pending, running, backoff, done, failed, stopped
    last_exit: int | None = None
    _pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def _pump(name: str, stream: IO[bytes], log_path: Path, out: IO[str]) -> None:
    """Copy a child's output to its log file and, prefixed, to our stdout."""
    with open(log_path, "ab", buffering=0) as log:
        for raw in iter(stream.readline, b""):
            log.write(raw)
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                out.write(f"[{name}] {line}\n")
                out.flush()
            except (OSError, ValueError):
                pass
    stream.close()


class Supervisor:
    """Starts children and keeps services running; call `tick()` regularly, `stop_all()` at the end."""

    def __init__(self, log_dir: Path, clock: Clock = time.monotonic, out: IO[str] | None = None,
                 on_change: Callable[[Child, str], None] | None = None) -> None:
        self.log_dir = log_dir
        self.clock = clock
        self.out = out or sys.stdout
        self.on_change = on_change or (lambda child, message: None)
        self.children: dict[str, Child] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, spec: Spec) -> Child:
        """Start a child now (replacing a finished one of the same name)."""
        child = Child(spec, self.log_dir / f"{spec.name}.log")
        self.children[spec.name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        spec = child.spec
        shell = isinstance(spec.cmd, str)
        env = child_env() if spec.env is None else dict(spec.env)
        try:
            child.proc = subprocess.Popen(
                spec.cmd if not shell else ["/bin/sh", "-c", spec.cmd],  # type: ignore[list-item]
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            child.state, child.last_exit = "failed", None
            with open(child.log_path, "a") as log:
                log.write(f"cannot start: {e}\n")
            self.on_change(child, f"cannot start: {e}")
            return
        assert child.proc.stdout is not None
        child._pump = threading.Thread(
            target=_pump, args=(spec.name, child.proc.stdout, child.log_path, self.out), daemon=True
        )
        child._pump.start()
        child.state, child.next_start, child.started_at = "running", None, self.clock()
        self.on_change(child, f"started (pid {child.proc.pid})")

    def tick(self) -> None:
        """Notice exits; forget the crashes of services that have run stable since; restart crashed services
        whose backoff has passed."""
        now = self.clock()
        for child in list(self.children.values()):
            if child.state == "running" and child.restarts and child.started_at is not None \
                    and now - child.started_at >= child.spec.stable_seconds:
                child.restarts = 0  # it recovered: its next crash starts a new count, from a 1 s backoff
            if child.state == "running" and child.proc is not None and child.proc.poll() is not None:
                child.last_exit = child.proc.returncode
                if child._pump is not None:
                    child._pump.join(2)
                if not child.spec.restart:
                    child.state = "done" if child.last_exit == 0 else "failed"
                    self.on_change(child, f"exited with code {child.last_exit}")
                elif child.restarts >= child.spec.max_restarts:
                    child.state = "failed"
                    self.on_change(child, f"exited with code {child.last_exit}; gave up after {child.restarts} restarts")
                else:
                    delay = min(30.0, 2.0**child.restarts)
                    child.state, child.next_start = "backoff", now + delay
                    self.on_change(child, f"exited with code {child.last_exit}; restarting in {delay:.0f} s")
            elif child.state == "backoff" and child.next_start is not None and now >= child.next_start:
                child.restarts += 1
                self._spawn(child)

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL after `grace` seconds."""
        child = self.children.get(name)
        if child is None or child.proc is None:
            return
        if child.proc.poll() is None:
            _signal_group(child.proc, signal.SIGTERM)
            try:
                child.proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
        child.last_exit = child.proc.returncode
        child.state = "stopped"
        if child._pump is not None:
            child._pump.join(2)

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop every child at once (SIGTERM to all, then wait; SIGKILL what is left after `grace`)."""
        live = [c for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for child in live:
            assert child.proc is not None
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in live:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
        for child in self.children.values():
            if child.state in ("running", "backoff"):
                child.state = "stopped"
            if child._pump is not None:
                child._pump.join(2)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
