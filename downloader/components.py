"""Installation components (aria2, JupyterLab, ComfyUI, SageAttention, ...), one row per pod and name.

Pods that share a workspace (one network volume) share its state database. Each reports its steps under its pod id
(`Settings.pod_id`; the entrypoint hands its id to its service), so one pod's "comfyui" never overwrites another's,
and each pod's status page shows its own steps in full and the other pods' at a glance. A log path is stored
relative to the workspace: pods may mount the volume at different paths, and each reads its logs through its own.
Earlier versions kept one `components` table keyed by name only; `ensure_table` carries its rows over.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import String, case, func, null
from sqlalchemy.dialects.sqlite import Insert, insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

log = logging.getLogger(__name__)

# A component reported without a pod (a script, or a version before components were per pod): every pod shows it
# as its own until that pod reports the name itself.
ANY_POD = ""
SHARING = "workspace sharing"  # the service's row: whether its pod shares the workspace with other pods
LEGACY_TABLE = "components"  # the table of earlier versions, keyed by name only
SETTLED = ("done", "failed", "skipped")  # a component in one of these has ended


class _Tables(DeclarativeBase):
    """Component's own metadata: its table is made by `ensure_table` (with the rows of an earlier version), never
    by the state database's create_all, which would make it empty first."""


class Component(_Tables):
    """An installation step one pod reports."""

    __tablename__ = "pod_components"

    pod: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None]
    # Relative to the reporting pod's workspace (see `log_ref`); absolute for a log outside it and in rows that
    # earlier versions wrote.
    log_path: Mapped[str | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


def log_ref(path: str | Path, workspace: Path) -> str:
    """How a component's log path is stored: relative to the workspace when it is inside it (another pod mounts the
    volume elsewhere, and reads its own logs through its own mount), else unchanged."""
    given = Path(path)
    if not given.is_absolute():
        return given.as_posix()
    for root in (workspace, workspace.resolve()):  # the workspace may be a link to the volume's mount point
        if given.is_relative_to(root):
            return given.relative_to(root).as_posix()
    return str(given)


def log_location(stored: str, workspace: Path) -> Path:
    """Where a stored component log is for this pod: a relative path is resolved against this pod's workspace."""
    path = Path(stored)
    return path if path.is_absolute() else workspace / path


def upsert(pod: str, name: str, state: str, message: str | None, log_path: str | None, now: datetime) -> Insert:
    """The one statement that reports a step: inserted, or updated in place (two processes of a pod reporting
    one step at once cannot collide). Times follow from the state: a step that starts running gets a new start
    time and no end time, one that settles an end time; a message or log path left out keeps the last one."""
    table = Component.__table__
    running, settled = state == "running", state in SETTLED
    add = insert(table).values(
        pod=pod, name=name, state=state, message=message, log_path=log_path, updated_at=now,
        started_at=now if running else None, ended_at=now if settled else None,
    )
    started: Any = table.c.started_at
    ended: Any = now if settled else table.c.ended_at
    if running:  # one that was running already keeps its times
        started = case((table.c.state != "running", now), else_=table.c.started_at)
        ended = case((table.c.state != "running", null()), else_=table.c.ended_at)
    return add.on_conflict_do_update(
        index_elements=[table.c.pod, table.c.name],
        set_={"state": state, "updated_at": now, "started_at": started, "ended_at": ended,
              "message": func.coalesce(add.excluded.message, table.c.message),
              "log_path": func.coalesce(add.excluded.log_path, table.c.log_path)},
    )


def ensure_table(engine: Engine) -> None:
    """Make the per-pod table; in a database of an earlier version (one `components` table keyed by name only,
    where pods overwrote each other's rows) carry its rows over in the same transaction: a service's `pod <id>`
    row becomes that pod's SHARING row, every other row ANY_POD's.

    A new table rather than the old one rebuilt with a new primary key: pods still running an earlier version on
    the same volume look their rows up by name alone, and would fail on a name that two pods reported. They keep
    their table, which this version neither reads nor writes."""
    find = "SELECT name FROM sqlite_master WHERE type = 'table'"
    with engine.connect() as conn:
        if Component.__tablename__ in {row[0] for row in conn.exec_driver_sql(find)}:
            return  # the usual case, without taking the write lock (a reader may not be allowed to write)
        conn.rollback()
        # IMMEDIATE: the write lock before the check, so that of two processes opening an old database at once one
        # migrates and the other finds the table made (pysqlite would otherwise commit each DDL statement alone).
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        tables = {row[0] for row in conn.exec_driver_sql(find)}
        if Component.__tablename__ in tables:
            conn.rollback()
            return
        Component.__table__.create(conn)  # type: ignore[attr-defined]
        if LEGACY_TABLE in tables:
            moved = conn.exec_driver_sql(
                f"INSERT OR IGNORE INTO {Component.__tablename__} "
                "(pod, name, state, message, log_path, started_at, ended_at, updated_at) "
                "SELECT CASE WHEN substr(name, 1, 4) = 'pod ' THEN substr(name, 5) ELSE ? END, "
                "CASE WHEN substr(name, 1, 4) = 'pod ' THEN ? ELSE name END, "
                f"coalesce(state, 'pending'), message, log_path, started_at, ended_at, updated_at FROM {LEGACY_TABLE}",
                (ANY_POD, SHARING),
            ).rowcount
            log.info("state database: %d installation component(s) carried over to per-pod status", moved)
        conn.commit()
