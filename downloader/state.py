"""SQLite state through SQLAlchemy 2: one row per artifact, an event history, installation components.

The database is the meeting point of the processes: the Manager writes downloads and events, the
entrypoint writes components, the web layer reads both; on a shared network volume, the processes of other pods
too. How connections are set up for that (journal mode by filesystem, waits for locks): downloader/sqlite_setup.py.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    String,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import NullPool

from downloader import sqlite_setup
from downloader.components import ANY_POD, Component, ensure_table, upsert

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class DownloadState(str, enum.Enum):
    """The state machine of a download, in one place."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PAUSED = "paused"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"


S = DownloadState
# Which moves are legal; anything else is a bug and raises.
TRANSITIONS: dict[DownloadState, frozenset[DownloadState]] = {
    S.QUEUED: frozenset({S.DOWNLOADING, S.VERIFYING, S.PAUSED, S.FAILED, S.DONE}),
    S.DOWNLOADING: frozenset({S.QUEUED, S.PAUSED, S.VERIFYING, S.FAILED}),
    S.PAUSED: frozenset({S.QUEUED, S.FAILED}),
    S.VERIFYING: frozenset({S.DONE, S.FAILED, S.QUEUED, S.PAUSED}),
    S.DONE: frozenset({S.QUEUED, S.VERIFYING}),
    S.FAILED: frozenset({S.QUEUED, S.VERIFYING, S.PAUSED}),
}
ACTIVE_STATES = frozenset({S.DOWNLOADING, S.VERIFYING})
TERMINAL_STATES = frozenset({S.DONE, S.FAILED})

# What people read for each state (pages, CLI), in the order the pages count them.
STATE_LABELS: dict[DownloadState, str] = {
    S.DOWNLOADING: "downloading",
    S.VERIFYING: "verifying",
    S.QUEUED: "queued",
    S.PAUSED: "paused",
    S.FAILED: "failed",
    S.DONE: "done",
}
# A manifest model that was never queued: shown by the UI so a person can start it, never stored in the DB.
AVAILABLE = "available"
# The buttons a download offers in each state (the downloads page, one file at a time).
ACTIONS: dict[str, frozenset[str]] = {
    "start": frozenset({AVAILABLE}),
    "pause": frozenset({S.QUEUED.value, S.DOWNLOADING.value}),
    "resume": frozenset({S.PAUSED.value}),
    "retry": frozenset({S.FAILED.value}),
    "cancel": frozenset({S.QUEUED.value, S.DOWNLOADING.value, S.VERIFYING.value, S.PAUSED.value, S.FAILED.value}),
}


def bytes_done(state: str, size: int | None, done: int) -> int:
    """Bytes of a download that count as done: all of them once it is in place, else what is on disk so far."""
    return (size or 0) if state == S.DONE.value else done


UNIQUE_DEST_INDEX = "ux_downloads_dest"
# Which of several rows with one dest an old database keeps (see `_dedupe_dests`): the most advanced one.
_KEEP_ORDER = {"done": 0, "verifying": 1, "downloading": 2, "queued": 3, "paused": 4, "failed": 5}


class Base(DeclarativeBase):
    pass


class Download(Base):
    """One file to fetch and place."""

    __tablename__ = "downloads"
    # Two downloads must never write one file: the database refuses a second row with the same dest.
    __table_args__ = (Index(UNIQUE_DEST_INDEX, "dest", unique=True),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str]
    revision: Mapped[str | None]
    dest: Mapped[str]  # relative to the models dir
    size: Mapped[int | None]  # expected bytes (manifest or hub or server)
    sha256: Mapped[str | None]  # expected digest
    sha256_origin: Mapped[str | None]  # "manifest", "hub" or None (unverified)
    size_origin: Mapped[str | None]  # "manifest" when a manifest pins the size: kept when the source is asked again
    required: Mapped[bool] = mapped_column(default=True)
    manifest: Mapped[str | None]
    state: Mapped[str] = mapped_column(String(16), default=S.QUEUED.value, index=True)
    bytes_done: Mapped[int] = mapped_column(default=0)
    speed: Mapped[int] = mapped_column(default=0)  # bytes/s, last sample
    error: Mapped[str | None]
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    verified: Mapped[bool] = mapped_column(default=False)  # sha256 checked (False + done = size-checked only)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready view (no secrets are stored in a row)."""
        return _json_ready({c.name: getattr(self, c.name) for c in self.__table__.columns})


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    for key, value in row.items():
        if isinstance(value, datetime):
            row[key] = value.replace(tzinfo=timezone.utc).isoformat()
    return row


class Event(Base):
    """Something that happened to a download (or the service), for the history view."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_download_at", "download_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    download_id: Mapped[str | None] = mapped_column(ForeignKey("downloads.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str]


class IllegalTransition(RuntimeError):
    """A state change the state machine does not allow."""


def make_engine(db_path: Path) -> Engine:
    """An engine on a SQLite file, with the schema created: WAL on a local disk, the rollback journal on a FUSE or
    network filesystem (a RunPod network volume), connections that wait out other processes' locks."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    journal_mode = sqlite_setup.journal_mode_for(db_path.parent)
    if journal_mode == "WAL":
        engine = create_engine(
            f"sqlite:///{db_path}",
            connect_args={"check_same_thread": False, "timeout": sqlite_setup.BUSY_TIMEOUT_SECONDS,
                          "factory": sqlite_setup.RetryingConnection},
        )
    else:  # a shared filesystem: every transaction opens the file afresh under the volume lock (sqlite_setup)
        engine = create_engine(f"sqlite:///{db_path}", creator=sqlite_setup.shared_connector(db_path),
                               poolclass=NullPool)
    event.listen(engine, "connect", lambda dbapi_conn, _record: sqlite_setup.apply_pragmas(dbapi_conn, journal_mode))
    ensure_table(engine)  # the installation components, per pod (downloader/components.py)
    for attempt in range(5):
        try:
            Base.metadata.create_all(engine)
            break
        except OperationalError as e:
            # Two processes opening a new DB at once race between "does the table exist" and "create it".
            if "already exists" not in str(e) or attempt == 4:
                raise
            time.sleep(0.05)
    _ensure_columns(engine)
    _ensure_unique_dests(engine)
    return engine


def _ensure_columns(engine: Engine) -> None:
    """Give a database made by an older version the columns added since (all nullable: old rows read as None)."""
    with engine.begin() as conn:
        have = {row[1] for row in conn.execute(text("PRAGMA table_info(downloads)"))}
        for column in Download.__table__.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(text(f'ALTER TABLE downloads ADD COLUMN "{column.name}" {kind}'))


def _ensure_unique_dests(engine: Engine) -> None:
    """Give a database made before the unique-dest rule its index; duplicates it holds are resolved first."""
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM sqlite_master WHERE type='index' AND name=:n"), {"n": UNIQUE_DEST_INDEX}).first():
            return
        _dedupe_dests(conn)
        conn.execute(text(f"CREATE UNIQUE INDEX IF NOT EXISTS {UNIQUE_DEST_INDEX} ON downloads (dest)"))


def _dedupe_dests(conn: Any) -> None:
    """Keep one row per dest (done first, then the furthest along, then the newest); delete the others with their
    events, and say so in the kept row's history and the log. Two rows for one file could only fight over it."""
    rows = conn.execute(
        text("SELECT id, dest, state, updated_at FROM downloads WHERE dest IN "
             "(SELECT dest FROM downloads GROUP BY dest HAVING COUNT(*) > 1)")
    ).all()
    by_dest: dict[str, list[Any]] = {}
    for row in rows:
        by_dest.setdefault(row.dest, []).append(row)
    for dest, group in by_dest.items():
        group.sort(key=lambda r: (_KEEP_ORDER.get(r.state, 9), -_timestamp(r.updated_at)))
        keep, drop = group[0], [r.id for r in group[1:]]
        for download_id in drop:
            conn.execute(text("DELETE FROM events WHERE download_id = :id"), {"id": download_id})
            conn.execute(text("DELETE FROM downloads WHERE id = :id"), {"id": download_id})
        message = f"removed {', '.join(sorted(drop))}: same destination {dest} (one download per file)"
        conn.execute(
            text("INSERT INTO events (download_id, at, level, message) VALUES (:id, :at, 'warning', :m)"),
            {"id": keep.id, "at": utcnow(), "m": message},
        )
        log.warning("state database: kept %s for %s and %s", keep.id, dest, message)


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


EVENTS_KEPT = 200  # events kept per download (and for the service's own): the history a person reads, bounded


def _add_event(s: Session, download_id: str | None, level: str, message: str) -> None:
    """Add an event and drop that download's events beyond the newest EVENTS_KEPT, in the same transaction: one
    indexed look-up per write, so the table stays bounded however long a pod runs."""
    s.add(Event(download_id=download_id, level=level, message=message))
    s.flush()
    same = Event.download_id.is_(None) if download_id is None else Event.download_id == download_id
    cutoff = s.scalar(select(Event.id).where(same).order_by(Event.id.desc()).offset(EVENTS_KEPT).limit(1))
    if cutoff is not None:
        s.execute(delete(Event).where(same, Event.id <= cutoff).execution_options(synchronize_session=False))


class Store:
    """The queries the rest of the package needs; each call is its own short transaction."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self.engine = make_engine(db_path)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- downloads -------------------------------------------------------------------------------
    def get(self, download_id: str) -> Download | None:
        with self.session() as s:
            return s.get(Download, download_id)

    def downloads(self, ids: Sequence[str] | None = None, state: DownloadState | None = None) -> list[Download]:
        """All rows (or those with the given ids, or in the given state), oldest first."""
        with self.session() as s:
            query = select(Download).order_by(Download.created_at, Download.id)
            if ids is not None:
                query = query.where(Download.id.in_(list(ids)))
            if state is not None:
                query = query.where(Download.state == state.value)
            return list(s.scalars(query))

    def rows(self) -> list[dict[str, Any]]:
        """Every download as a JSON-ready dict, oldest first, read with the plain sqlite3 cursor: the web UI
        polls this every second with hundreds of rows, and ORM objects or datetime parsing cost 10x more."""
        table = Download.__table__
        dates = {c.name for c in table.columns if isinstance(c.type, DateTime)}
        flags = {c.name for c in table.columns if isinstance(c.type, Boolean)}
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute("SELECT * FROM downloads ORDER BY created_at, id")
            names = [d[0] for d in cur.description]
            out = []
            for values in cur.fetchall():
                row = dict(zip(names, values))
                for key in dates:
                    if row[key] is not None:  # stored as 'YYYY-MM-DD HH:MM:SS[.ffffff]' in UTC
                        row[key] = row[key].replace(" ", "T") + "+00:00"
                for key in flags:
                    row[key] = bool(row[key])
                out.append(row)
            return out
        finally:
            conn.close()

    def holder_of(self, dest: str) -> Download | None:
        """The download whose destination is `dest` (there is at most one)."""
        with self.session() as s:
            return s.scalars(select(Download).where(Download.dest == dest)).first()

    def upsert(self, download_id: str, **fields: Any) -> Download:
        """Create a row or update its descriptive fields (never its state: use `transition`)."""
        assert "state" not in fields, "state changes go through transition()"
        with self.session() as s:
            row = s.get(Download, download_id)
            if row is None:
                row = Download(id=download_id, **fields)
                s.add(row)
                s.add(Event(download_id=download_id, message="added"))
            else:
                for key, value in fields.items():
                    setattr(row, key, value)
                row.updated_at = utcnow()
            return row

    def update(self, download_id: str, **fields: Any) -> None:
        """Progress and bookkeeping fields, without a state change or an event."""
        assert "state" not in fields, "state changes go through transition()"
        with self.session() as s:
            row = s.get(Download, download_id)
            if row is None:
                return
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = utcnow()

    def transition(
        self,
        download_id: str,
        new: DownloadState,
        message: str | None = None,
        level: str = "info",
        *,
        expect: DownloadState | None = None,
        **fields: Any,
    ) -> Download:
        """Move a download to `new` (checked against TRANSITIONS), set fields, and record an event, all in one
        transaction. The UPDATE carries the state the move starts from (`expect`, else the state read just
        before): a row another writer moved meanwhile makes the move refused (IllegalTransition), never half-made."""
        with self.session() as s:
            found = s.execute(select(Download.state).where(Download.id == download_id)).first()
            if found is None:
                raise KeyError(download_id)
            old = DownloadState(found.state)
            if expect is not None and old != expect:
                raise IllegalTransition(f"{download_id}: {expect.value} -> {new.value} refused: it is {old.value} now")
            if new != old and new not in TRANSITIONS[old]:
                raise IllegalTransition(f"{download_id}: {old.value} -> {new.value}")
            now = utcnow()
            values: dict[str, Any] = {**fields, "state": new.value, "updated_at": now}
            if new == S.DOWNLOADING:
                values["started_at"] = func.coalesce(Download.started_at, now)  # a resume keeps the first start
            if new in TERMINAL_STATES:
                values["finished_at"], values["speed"] = now, 0
            moved = s.execute(
                update(Download)
                .where(Download.id == download_id, Download.state == old.value)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # raising rolls the transaction back: nothing of the move is stored
                now_state = s.scalar(select(Download.state).where(Download.id == download_id))
                raise IllegalTransition(
                    f"{download_id}: {old.value} -> {new.value} refused: the download moved to {now_state} meanwhile"
                )
            _add_event(s, download_id, level, message or new.value)
            row = s.get(Download, download_id)
            assert row is not None
            return row

    def delete(self, download_id: str) -> None:
        with self.session() as s:
            row = s.get(Download, download_id)
            if row is not None:
                s.delete(row)

    # --- events ----------------------------------------------------------------------------------
    def log(self, download_id: str | None, message: str, level: str = "info") -> None:
        """Record an event in a download's history (the newest EVENTS_KEPT of each are kept)."""
        with self.session() as s:
            _add_event(s, download_id, level, message)

    def events(self, download_id: str | None = None, limit: int = 100) -> list[Event]:
        """Newest first."""
        with self.session() as s:
            query = select(Event).order_by(Event.id.desc()).limit(limit)
            if download_id is not None:
                query = query.where(Event.download_id == download_id)
            return list(s.scalars(query))

    # --- components (installation status), per pod: downloader/components.py ------------------------------
    def set_component(
        self, name: str, state: str, message: str | None = None, log_path: str | None = None, *, pod: str = ANY_POD
    ) -> None:
        """Report a pod's installation step (`log_path` as `components.log_ref` makes it); start and end times
        follow from the state; a message or log path left out keeps the last one."""
        with self.session() as s:
            s.execute(upsert(pod, name, state, message, log_path, utcnow()))

    def components(self, pod: str | None = None) -> list[Component]:
        """Every pod's components (by pod, then name), or one pod's."""
        with self.session() as s:
            query = select(Component).order_by(Component.pod, Component.name)
            if pod is not None:
                query = query.where(Component.pod == pod)
            return list(s.scalars(query))
