"""Following a running service's downloads from the CLI: poll `GET /api/downloads` until the files settle.

Ctrl-C or SIGTERM stops the following, never the downloads: the service goes on with them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..signals import stop_on_signals
from ..state import TERMINAL_STATES, DownloadState
from .app import err_console, service_failed
from .client import ServiceClient, ServiceError
from .progress import Row

POLL_SECONDS = 0.5  # the service reuses its /api/downloads answer for 0.5 s
STOPPED = "stopped following: the downloads go on in the service; `downloader status` shows them"
S = DownloadState


class Snapshot:
    """The service's rows at one moment, by id (manifest models never started show as `available`)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.by_id: dict[str, dict[str, Any]] = {d["id"]: d for d in payload.get("downloads", [])}
        self.summary: dict[str, Any] = payload.get("summary", {})

    @classmethod
    def take(cls, client: ServiceClient) -> Snapshot:
        try:
            return cls(client.get("/api/downloads"))
        except ServiceError as e:
            raise service_failed(e) from None

    def rows(self, ids: Sequence[str]) -> list[Row]:
        return [Row.from_api(self.by_id[i]) for i in ids if i in self.by_id]


def moved_since(before: Snapshot) -> Callable[[Row], bool]:
    """Whether a row was written after `before` was taken: a verdict from before a request (a failure the
    service has not picked up yet, a done file it has not re-hashed yet) is not the answer to the request."""

    def moved(row: Row) -> bool:
        old = before.by_id.get(row.id)
        return old is None or old.get("updated_at") != row.updated_at

    return moved


def fetch_settled(before: Snapshot) -> Callable[[Row], bool]:
    """A fetched file is settled once done, failed or paused (as an in-process fetch ends) by the request's
    own doing; a file done before it stays done unless the service says otherwise."""
    moved = moved_since(before)

    def settled(row: Row) -> bool:
        if S(row.state) not in (*TERMINAL_STATES, S.PAUSED):
            return False
        was_done = before.by_id.get(row.id, {}).get("state") == S.DONE.value
        return moved(row) or (was_done and row.state == S.DONE.value)

    return settled


def verify_settled(before: Snapshot) -> Callable[[Row], bool]:
    """A re-hashed file is settled once done or failed again, after the request."""
    moved = moved_since(before)
    return lambda row: S(row.state) in TERMINAL_STATES and moved(row)


@contextmanager
def following() -> Iterator[threading.Event]:
    """Within the block, Ctrl-C/SIGTERM set the yielded event; leaving it after one, say so and exit 128 + signal."""
    stop = threading.Event()
    with stop_on_signals(stop.set) as received:
        yield stop
    if received:
        err_console.print(STOPPED)
        sys.exit(128 + received[0])


def follow(
    client: ServiceClient,
    ids: Sequence[str],
    settled: Callable[[Row], bool],
    stop: threading.Event,
    on_tick: Callable[[list[Row]], None] | None = None,
) -> list[Row]:
    """Poll until every row in `ids` is settled (or `stop` is set: the rows as they are). When the service's
    engine is not working (waiting for the workspace, aria2c restarting, ...) its reason is shown once per change;
    the following goes on, since the service recovers by itself (Ctrl-C leaves it to it)."""
    said = None
    while True:
        snap = Snapshot.take(client)
        rows = snap.rows(ids)
        if on_tick is not None:
            on_tick(rows)
        if len(rows) == len(ids) and all(settled(r) for r in rows):
            return rows
        note = snap.summary.get("note") if snap.summary.get("manager") != "running" else None
        if note and note != said:
            err_console.print(f"the service: {note}")
        said = note
        if stop.wait(POLL_SECONDS):
            return rows
