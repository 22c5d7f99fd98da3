"""Which pod downloads which file: one claim per file in the shared state database.

Pods that share a workspace (one network volume) share its queue. A pod claims a file when it STARTS it (resolving,
downloading or hashing it), not when it is queued, so a queued file goes to whichever pod has a free slot first and
pods fetch different files at once. Taking a claim is one statement, an insert or the take-over of a claim whose
lease expired, so of two pods racing for a file exactly one wins. The holder renews its claims from its loop every
lease / 4 seconds; a pod that dies keeps its files only until the lease runs out, then another pod takes them over:
it moves the row back to queued, naming the dead pod, and the file resumes from its `.part` and control file on
whichever pod starts it next. Only the pod holding a file's claim writes that file's state.

Times are each pod's wall clock (`time.time()`): the lease absorbs a few seconds of skew between machines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ForeignKey, String, delete, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, mapped_column

from .state import (
    ACTIVE_STATES,
    Base,
    Download,
    DownloadState,
    IllegalTransition,
    Store,
)

log = logging.getLogger(__name__)
S = DownloadState
_ensured: set[int] = set()  # engines (by id) whose database has the claims table


class Claim(Base):
    """A pod working on a file, until `expires_at` (epoch seconds) unless renewed."""

    __tablename__ = "claims"

    download_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("downloads.id", ondelete="CASCADE"), primary_key=True
    )
    pod: Mapped[str] = mapped_column(String(128))
    since: Mapped[float]  # when this pod took it
    expires_at: Mapped[float] = mapped_column(index=True)
    previous: Mapped[str | None]  # the pod it was taken over from, whose lease had expired


def ensure_table(store: Store) -> None:
    """Create the claims table in a database made before claims existed (create_all runs when a Store opens; a
    process that opened it before importing this module has not made it)."""
    key = id(store.engine)
    if key in _ensured:
        return
    try:
        Claim.__table__.create(store.engine, checkfirst=True)  # type: ignore[attr-defined]
    except OperationalError as e:  # another process made it between the check and the create
        if "already exists" not in str(e):
            raise
    _ensured.add(key)


# Insert, or take over a claim that is ours already or whose lease ran out; RETURNING says whether it was won and
# from whom. SQLite runs it as one write: two pods cannot both win.
_TAKE = text(
    "INSERT INTO claims (download_id, pod, since, expires_at, previous) VALUES (:id, :pod, :now, :expires, NULL) "
    "ON CONFLICT (download_id) DO UPDATE SET "
    "  previous = CASE WHEN claims.pod = excluded.pod THEN claims.previous ELSE claims.pod END, "
    "  since = CASE WHEN claims.pod = excluded.pod THEN claims.since ELSE excluded.since END, "
    "  pod = excluded.pod, expires_at = excluded.expires_at "
    "WHERE claims.pod = excluded.pod OR claims.expires_at < :now "
    "RETURNING previous"
)


@dataclass(frozen=True)
class Taken:
    """A claim won: `previous` names the pod whose expired claim it replaced (None: the file was free)."""

    previous: str | None


def live_holders(store: Store, now: float | None = None) -> dict[str, str]:
    """download id -> the pod whose claim on it is live: what the pages and `status` show as "fetching on"."""
    ensure_table(store)
    now = time.time() if now is None else now
    with store.session() as s:
        return {i: p for i, p in s.execute(select(Claim.download_id, Claim.pod).where(Claim.expires_at >= now))}


class Claims:
    """One pod's claims in one state database; `mine` is what this pod believes it holds."""

    def __init__(self, store: Store, pod: str, lease: float, clock: Callable[[], float] = time.time) -> None:
        self.store, self.pod, self.lease, self.clock = store, pod, lease, clock
        self.mine: set[str] = set()
        self._renewed_at = 0.0
        ensure_table(store)

    @property
    def renew_due(self) -> bool:
        """Whether a quarter of the lease passed since the last renewal (the loop renews then)."""
        return self.clock() - self._renewed_at >= self.lease / 4

    def take(self, download_id: str) -> Taken | None:
        """Claim a file for this pod; None when another pod's claim on it is live. Ours already: renewed."""
        now = self.clock()
        with self.store.session() as s:
            won = s.execute(_TAKE, {"id": download_id, "pod": self.pod, "now": now, "expires": now + self.lease}).first()
        if won is None:
            return None
        self.mine.add(download_id)
        previous = won[0]
        return Taken(previous if previous != self.pod else None)

    def claim_queued(self, download_id: str) -> bool:
        """Claim a queued file before starting it (the manager's `_start_queued`); False when another pod was
        quicker, or the row is no longer queued (a pod that won and finished it meanwhile let go of it)."""
        if download_id in self.mine:
            return True
        if self.take(download_id) is None:
            return False
        row = self.store.get(download_id)
        if row is None or row.state != S.QUEUED.value:
            self.release([download_id])
            return False
        return True

    def keep(self, working: set[str], jobs: set[str]) -> set[str]:
        """The loop's upkeep, every tick: every lease / 4 s renew this pod's claims and requeue what dead pods
        left; let go of claims on files no longer worked on (`working`: jobs, resolutions, rechecks). Returns the
        files the loop must let go of without writing to them: a claim lost (taken over while this pod stalled past
        its lease), or a job's row that another pod moved (a click on its page: pause, cancel) or deleted."""
        let_go: set[str] = set()
        if self.renew_due:
            held = self.renew()
            for lost in sorted(working - held):
                log.warning("%s: this pod (%s) lost its claim (another pod took it over): letting go", lost, self.pod)
                let_go.add(lost)
            self.requeue_abandoned(working)
        if jobs:
            rows = {r.id: S(r.state) for r in self.store.downloads(sorted(jobs))}
            let_go |= {i for i in jobs if rows.get(i) not in ACTIVE_STATES}
        idle = self.mine - (working - let_go)
        if idle:
            self.release(idle)
        return let_go

    def around_recheck(self, ids: Sequence[str] | None, begin: Callable[[], list[str]]) -> list[str]:
        """Claim the done files `begin` (recheck.begin: done -> verifying) may move, before it moves them, so no
        pod takes a row waiting for its hash for a dead pod's; let go of those it did not start."""
        done = [r.id for r in self.store.downloads(list(ids) if ids is not None else None, state=S.DONE)]
        taken = {i for i in done if self.take(i) is not None}
        try:
            started = begin()
        except BaseException:
            self.release(taken)
            raise
        self.release(taken - set(started))
        return started

    def renew(self) -> set[str]:
        """Extend every claim this pod holds; returns the ids it still holds (a claim taken over while this pod
        was stalled past its lease is no longer among them)."""
        now = self.clock()
        with self.store.session() as s:
            s.execute(update(Claim).where(Claim.pod == self.pod).values(expires_at=now + self.lease))
            held = set(s.scalars(select(Claim.download_id).where(Claim.pod == self.pod)))
        self._renewed_at = now
        self.mine = held
        return held

    def release(self, ids: Iterable[str]) -> None:
        """Let go of files this pod no longer works on (done, failed, paused, waiting for a retry)."""
        ids = list(ids)
        if not ids:
            return
        with self.store.session() as s:
            s.execute(delete(Claim).where(Claim.pod == self.pod, Claim.download_id.in_(ids)))
        self.mine.difference_update(ids)

    def release_all(self) -> None:
        """Let go of every file (a clean stop): other pods may take them at once, without waiting for the lease."""
        with self.store.session() as s:
            s.execute(delete(Claim).where(Claim.pod == self.pod))
        self.mine.clear()

    def others(self) -> dict[str, str]:
        """download id -> pod, for the live claims of other pods: files this pod must leave alone."""
        return {i: p for i, p in live_holders(self.store, self.clock()).items() if p != self.pod}

    def requeue_abandoned(self, busy: Iterable[str] = ()) -> list[str]:
        """Take over the files that pods which stopped renewing left downloading or verifying: each is claimed
        (so one pod does it), moved back to queued with an event naming the dead pod, and let go, to resume from
        its `.part` on whichever pod starts it next. Rows without a claim are `requeue_unclaimed`'s. `busy`:
        ids this pod works on. Returns the ids requeued."""
        now, skip = self.clock(), set(busy)
        with self.store.session() as s:
            stale = s.execute(
                select(Download.id, Download.state, Claim.pod)
                .join(Claim, Claim.download_id == Download.id)
                .where(Claim.expires_at < now, Claim.pod != self.pod,
                       Download.state.in_([st.value for st in ACTIVE_STATES]))
            ).all()
        out = []
        for download_id, state, pod in stale:
            if download_id in skip or self.take(download_id) is None:
                continue  # another pod was quicker
            try:
                self.store.transition(
                    download_id, S.QUEUED,
                    f"pod {pod} stopped (its claim expired): queued again, to resume from what it downloaded",
                    "warning", expect=S(state), speed=0,
                )
                out.append(download_id)
            except (IllegalTransition, KeyError):
                pass  # moved meanwhile (a click): that move stands
            finally:
                self.release([download_id])
        return out

    def requeue_unclaimed(self, busy: Iterable[str], message: str) -> list[str]:
        """At start (or after a failed tick): rows downloading or verifying that no live pod claims and this pod
        does not work on go back to queued; a live pod's files are never touched. Returns the ids requeued."""
        others, skip, out = self.others(), set(busy), []
        for row in self.store.downloads():
            state = S(row.state)
            if state in ACTIVE_STATES and row.id not in skip and row.id not in others:
                try:
                    self.store.transition(row.id, S.QUEUED, message, expect=state, speed=0)
                    out.append(row.id)
                except IllegalTransition:  # moved meanwhile by another writer: theirs stands
                    pass
        self.release([i for i in self.mine if i not in skip])
        return out

