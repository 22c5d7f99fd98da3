"""Progress of a fetch for people: rich bars on a terminal, a plain line every few seconds in a log."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..errors import human_bytes
from ..state import ACTIVE_STATES, TERMINAL_STATES, DownloadState, bytes_done

S = DownloadState


class RowLike(Protocol):
    """What progress and the end-of-fetch report read of a download: a state DB row, or a service's JSON row."""

    id: str
    dest: str
    state: str
    size: int | None
    bytes_done: int
    speed: int
    error: str | None
    verified: bool


@dataclass(frozen=True)
class Row:
    """A download as `GET /api/downloads` shows it, with the attributes of a state DB row."""

    id: str
    dest: str
    state: str
    size: int | None
    bytes_done: int
    speed: int
    error: str | None
    verified: bool
    updated_at: str | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Row:
        return cls(
            id=data["id"],
            dest=data.get("dest") or "(CivitAI names it once resolved)",
            state=data["state"],
            size=data.get("size"),
            bytes_done=data.get("bytes_done") or 0,
            speed=data.get("speed") or 0,
            error=data.get("error"),
            verified=bool(data.get("verified")),
            updated_at=data.get("updated_at"),
        )


def _eta(remaining: int, speed: float) -> str:
    if speed <= 0:
        return "--:--"
    seconds = int(remaining / speed)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class FetchProgress:
    """Call `update(rows)` every tick; `close()` at the end. Chooses bars or log lines by the console."""

    def __init__(self, console: Console, log_every: float = 10.0) -> None:
        self.console = console
        self.live = console.is_terminal
        self.log_every = log_every
        self._last_log = 0.0
        self._states: dict[str, str] = {}
        self._tasks: dict[str, TaskID] = {}
        self._bars: Progress | None = None
        if self.live:
            self._bars = Progress(
                TextColumn("{task.fields[state]:>11}"),
                TextColumn("[bold]{task.description}", justify="left"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._bars.start()

    def update(self, rows: Sequence[RowLike]) -> None:
        for row in rows:
            if self._states.get(row.id) != row.state:
                self._states[row.id] = row.state
                if S(row.state) in TERMINAL_STATES or self.live is False:
                    self._announce(row)
        if self._bars is not None:
            self._update_bars(rows)
        elif time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            self._log_line(rows)

    def _announce(self, row: RowLike) -> None:
        if row.state == S.FAILED.value:
            self.console.print(f"[red]failed[/] {row.id}: {row.error}")
        elif row.state == S.DONE.value:
            note = "" if row.verified else " (unverified: no sha256 known, size checked)"
            self.console.print(f"[green]done[/] {row.id} -> {row.dest}{note}")
        elif not self.live:
            self.console.print(f"{row.state} {row.id}" + (f": {row.error}" if row.error else ""))

    def _update_bars(self, rows: Sequence[RowLike]) -> None:
        assert self._bars is not None
        total_size = sum(r.size or 0 for r in rows)
        total_done = sum(bytes_done(r.state, r.size, r.bytes_done) for r in rows)
        if "__total__" not in self._tasks:
            self._tasks["__total__"] = self._bars.add_task("total", total=total_size, state="")
        for row in rows:
            if row.id not in self._tasks:
                self._tasks[row.id] = self._bars.add_task(row.id, total=row.size or None, state=row.state)
            done = bytes_done(row.state, row.size, row.bytes_done)
            self._bars.update(self._tasks[row.id], completed=done, total=row.size or None, state=row.state)
        self._bars.update(self._tasks["__total__"], completed=total_done, total=total_size or None)

    def _log_line(self, rows: Sequence[RowLike]) -> None:
        total = sum(r.size or 0 for r in rows)
        done = sum(bytes_done(r.state, r.size, r.bytes_done) for r in rows)
        speed = sum(r.speed for r in rows if r.state == S.DOWNLOADING.value)
        pct = 100.0 * done / total if total else 0.0
        active = ", ".join(
            f"{r.id} {100.0 * r.bytes_done / r.size:.0f}%" if r.size else r.id
            for r in rows
            if S(r.state) in ACTIVE_STATES
        )
        self.console.print(
            f"[{pct:5.1f}%] {human_bytes(done)} of {human_bytes(total)} at {human_bytes(speed)}/s, "
            f"ETA {_eta(total - done, speed)}" + (f" | {active}" if active else "")
        )

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
