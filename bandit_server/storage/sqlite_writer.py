"""Group commit: one thread owns the write connection and commits queued writes in batches.

Callers hand over a list of rows and a callback; the callback runs on this thread after the
transaction that holds the rows has committed (or failed), in submission order. Batching is what
makes "committed before the RPC returns" cheap under load: one fsync covers every waiting request.
"""

from __future__ import annotations

import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring

import structlog

from bandit_server.storage.records import (
    ActivationRow,
    DecisionRow,
    DeleteExperimentRow,
    DuplicateDecision,
    LearnedRow,
    RewardRow,
    WatermarkRow,
)
from bandit_server.storage.sqlite_schema import BUSY_TIMEOUT_SECONDS

log = structlog.get_logger(__name__)

Row = DecisionRow | RewardRow | ActivationRow | LearnedRow | WatermarkRow | DeleteExperimentRow
Done = Callable[[BaseException | None, list[LearnedRow]], None]

MAX_BATCH = 512
# The most rows a commit on the caller's thread takes: a Rank's or a Reward's rows, not a
# window-closing batch, which would hold the event loop for milliseconds.
MAX_HERE_ROWS = 16


@dataclass(slots=True)
class _Job:
    rows: Sequence[Row]
    done: Done


_STOP = object()


_INSERT_DECISION = (
    "INSERT INTO decisions (experiment, event_id, ts, deadline, user_id, deferred, c_json,"
    " action_ids, excluded, ranking, probabilities, model_version) VALUES "
)
_INSERT_REWARD = "INSERT INTO rewards (experiment, event_id, ts, value, late) VALUES "
_INSERT_ACTIVATION = "INSERT INTO activations (experiment, event_id, ts, late) VALUES "
_INSERT_LEARNED = "INSERT INTO learned (seq, experiment, event_id, cost, ts) VALUES "
_UPSERT_WATERMARK = (
    "INSERT INTO watermarks (experiment, closed_until) VALUES ",
    " ON CONFLICT (experiment) DO UPDATE SET closed_until = excluded.closed_until",
)

# Rows go into a table as multi-row INSERTs, not executemany. Python's sqlite3 lets go of the
# GIL around every sqlite3_step, and executemany takes a step per row; under load the event
# loop holds the GIL, so the writer waited for it back once a row, and each hand-over costs
# both threads CPU (measured: ~2.5x the writer's CPU a row against one statement a batch). A
# chunk of a power-of-two size keeps the distinct statements few enough for sqlite3's
# statement cache; 64 rows of 12 columns stay under SQLite's oldest limit of 999 parameters.
_MAX_CHUNK = 64


def _chunks(rows: list[tuple[object, ...]]) -> Iterator[list[tuple[object, ...]]]:
    """`rows` in runs of 64, 32, ... 1, the largest that fits what is left."""
    start = 0
    while start < len(rows):
        size = _MAX_CHUNK
        while size > len(rows) - start:
            size //= 2
        yield rows[start : start + size]
        start += size


@functools.cache
def _multi_row(head: str, tail: str, columns: int, rows: int) -> str:
    one = "(" + ",".join("?" * columns) + ")"
    return head + ",".join([one] * rows) + tail


def _statements(
    head: str | tuple[str, str], rows: list[tuple[object, ...]]
) -> Iterator[tuple[str, list[object]]]:
    start, tail = (head, "") if isinstance(head, str) else head
    for chunk in _chunks(rows):
        sql = _multi_row(start, tail, len(chunk[0]), len(chunk))
        yield sql, [value for row in chunk for value in row]


def _decision_params(row: DecisionRow) -> tuple[object, ...]:
    return (
        row.experiment,
        row.event_id,
        row.timestamp,
        row.deadline,
        row.user_id,
        int(row.deferred),
        row.c_json,
        # encode_basestring is json's own C string encoder (ensure_ascii=False); building the
        # array by hand skips making a JSONEncoder per call, as json.dumps with options does.
        "[" + ",".join(map(encode_basestring, row.action_ids)) + "]",
        row.excluded_json,
        # Plain joins: 3x cheaper than json.dumps, and the same JSON for ints and finite floats
        # (repr is the shortest round-trip form, as JSON writes it).
        "[" + ",".join(map(str, row.ranking)) + "]",
        "[" + ",".join(map(repr, row.probabilities)) + "]",
        row.model_version,
    )


class _Batch:
    """A transaction's rows grouped by table, so each table takes one executemany."""

    def __init__(self, next_learned_seq: int) -> None:
        self.decisions: list[tuple[object, ...]] = []
        self.rewards: list[tuple[object, ...]] = []
        self.activations: list[tuple[object, ...]] = []
        self.learned: list[tuple[object, ...]] = []
        self.watermarks: list[tuple[object, ...]] = []
        self.deletes: list[str] = []
        self.next_learned_seq = next_learned_seq

    def add(self, rows: Sequence[Row]) -> list[LearnedRow]:
        """Stage rows; learned rows get their seq now (one commit runs at a time)."""
        assigned: list[LearnedRow] = []
        for row in rows:
            if isinstance(row, DecisionRow):
                self.decisions.append(_decision_params(row))
            elif isinstance(row, RewardRow):
                self.rewards.append(
                    (row.experiment, row.event_id, row.timestamp, row.value, int(row.late))
                )
            elif isinstance(row, ActivationRow):
                self.activations.append(
                    (row.experiment, row.event_id, row.timestamp, int(row.late))
                )
            elif isinstance(row, WatermarkRow):
                self.watermarks.append((row.experiment, row.closed_until))
            elif isinstance(row, DeleteExperimentRow):
                self.deletes.append(row.experiment)
            else:
                seq = self.next_learned_seq
                self.next_learned_seq += 1
                self.learned.append((seq, row.experiment, row.event_id, row.cost, row.timestamp))
                assigned.append(
                    LearnedRow(row.experiment, row.event_id, row.cost, row.timestamp, seq)
                )
        return assigned

    def statements(self) -> list[tuple[str, Sequence[object]]]:
        """The SQL that writes this batch, in order."""
        out: list[tuple[str, Sequence[object]]] = []
        for head, rows in (
            (_INSERT_DECISION, self.decisions),
            (_INSERT_REWARD, self.rewards),
            (_INSERT_ACTIVATION, self.activations),
            (_INSERT_LEARNED, self.learned),
            (_UPSERT_WATERMARK, self.watermarks),
        ):
            out.extend(_statements(head, rows))
        # Last, after this batch's own rows: a delete always ends its batch (see _batch_size), so
        # it removes exactly what was submitted before it.
        for experiment in self.deletes:
            for table in (
                "decisions",
                "rewards",
                "activations",
                "learned",
                "unlearnable",
                "watermarks",
            ):
                out.append((f"DELETE FROM {table} WHERE experiment = ?", (experiment,)))
            out.append(("DELETE FROM experiments WHERE name = ?", (experiment,)))
        return out


def _ends_batch(job: _Job) -> bool:
    return any(isinstance(row, DeleteExperimentRow) for row in job.rows)


def _batch_size(jobs: list[_Job]) -> int:
    """How many of `jobs` go into the next batch: at most MAX_BATCH, ending at a delete."""
    for i, job in enumerate(jobs[:MAX_BATCH]):
        if _ends_batch(job):
            return i + 1
    return min(len(jobs), MAX_BATCH)


class GroupCommitWriter:
    """The single writer of one SQLite file.

    A dedicated thread, even without fsync: SQLite's C work then overlaps with the event loop
    when requests queue up. When none do, the hand-off costs more than it saves: two thread
    wake-ups per request on a busy machine. So with `here` (a check the caller passes: "is
    nothing else waiting on this thread?"), a small submit that finds the writer thread idle is
    committed at once on the caller's thread instead. Measured: Rank ~15-35% faster at 1
    request in flight; committing every batch on the loop was 5-20% slower at 32, which `here`
    avoids. Submits must all come from one thread (the event loop): that is what makes "the
    writer thread is idle" stay true while the caller commits.

    With `schedule`, batches are committed on the caller's thread instead, once per scheduling
    turn; tests use that to control batching exactly.
    """

    def __init__(
        self,
        con: sqlite3.Connection,
        schedule: Callable[[Callable[[], None]], object] | None = None,
        here: Callable[[], bool] | None = None,
    ) -> None:
        self._con = con
        self._schedule = schedule
        self._here = here
        # Jobs handed to the thread, and jobs it has finished (callbacks included); each is
        # written by one thread only, so equal counts mean the thread is not using `con`.
        self._handed = 0
        self._finished = 0
        self._pending: list[_Job] = []
        self._flush_scheduled = False
        # Called on this thread after each batch's callbacks: lets the engine wake its event
        # loop once per batch instead of once per request.
        self.on_batch_end: Callable[[], object] | None = None
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._next_learned_seq = 1 + int(
            con.execute("SELECT COALESCE(MAX(seq), 0) FROM learned").fetchone()[0]
        )
        con.execute("PRAGMA busy_timeout = 0")  # _write waits for the lock instead
        self._closed = False
        self.batches = 0
        self.rows = 0
        self.last_error: BaseException = RuntimeError("no error yet")

    @property
    def last_learned_seq(self) -> int:
        """The highest learned-row seq committed so far (read from any thread)."""
        return self._next_learned_seq - 1

    def start(self) -> None:
        if self._schedule is None:
            self._thread.start()

    def submit(self, rows: Sequence[Row], done: Done) -> bool:
        """Commit `rows`, then call `done`. True: it was committed on this thread, before this
        returned (and `on_batch_end` is not called for it)."""
        if self._closed:
            raise RuntimeError("the decision log is closed")
        job = _Job(rows, done)
        if self._schedule is None:
            here = self._here
            if (
                here is not None
                and len(rows) <= MAX_HERE_ROWS
                and self._handed == self._finished
                and here()
                and not _ends_batch(job)
                and self._commit_one(job, wait_for_lock=False)
            ):
                return True
            self._handed += 1
            self._queue.put(job)
            return False
        self._pending.append(job)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._schedule(self._flush_pending)
        return False

    def _flush_pending(self) -> None:
        self._flush_scheduled = False
        while self._pending:
            size = _batch_size(self._pending)
            jobs, self._pending = self._pending[:size], self._pending[size:]
            self._commit(jobs)
            if self.on_batch_end is not None:
                self.on_batch_end()

    def close(self) -> None:
        """Commit everything already submitted, then stop."""
        if self._closed:
            return
        self._closed = True
        if self._schedule is None:
            self._queue.put(_STOP)
            self._thread.join()
        else:
            self._flush_pending()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            jobs: list[_Job] = [first]  # type: ignore[list-item]
            while len(jobs) < MAX_BATCH and not _ends_batch(jobs[-1]):
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                jobs.append(item)  # type: ignore[arg-type]
            self._commit(jobs)
            # Counted before the hook: once the loop has seen this batch settle, it may commit
            # on its own thread.
            self._finished += len(jobs)
            if self.on_batch_end is not None:
                self.on_batch_end()

    def _commit(self, jobs: list[_Job]) -> None:
        batch = _Batch(self._next_learned_seq)
        try:
            learned = [batch.add(job.rows) for job in jobs]
        except Exception as exc:  # a row that cannot even be staged: find it one by one
            self.last_error = exc
            learned = []
        if not learned or not self._write(batch):
            self._log_failed_batch(len(jobs))
            # Retry one by one so a bad row (a repeated event id) fails only its own request.
            for job in jobs:
                self._commit_one(job)
            return
        self._next_learned_seq = batch.next_learned_seq
        self.batches += 1
        self.rows += sum(len(job.rows) for job in jobs)
        for job, mine in zip(jobs, learned, strict=True):
            job.done(None, mine)

    def _transaction(self, batch: _Batch) -> bool:
        con = self._con
        statements = batch.statements()
        try:
            if len(statements) == 1:
                # One statement is a transaction of its own: a step, not three, each a GIL
                # hand-over (see _MAX_CHUNK).
                con.execute(*statements[0])
                return True
            con.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                con.execute(sql, params)
            con.execute("COMMIT")
        except Exception as exc:  # not only sqlite3.Error: binding can raise others
            self.last_error = exc
            if con.in_transaction:
                con.execute("ROLLBACK")
            return False
        return True

    def _log_failed_batch(self, jobs: int) -> None:
        error = self.last_error
        # A repeated event id is Rank's documented way to retry (the UNIQUE constraint is the
        # check): not a failure an operator must look at.
        repeated = _is_repeated_id(error)
        log_at = log.info if repeated else log.warning
        log_at("log_batch_failed", error=repr(error), jobs=jobs, repeated_id=repeated)

    def _write(self, batch: _Batch, wait_for_lock: bool = True) -> bool:
        """The batch's transaction. While another connection holds SQLite's write lock (a mark
        from the learner, a checkpoint, an operator's shell), it is tried again, up to
        BUSY_TIMEOUT_SECONDS, or, without `wait_for_lock`, not at all.

        The connection's own busy timeout stays 0 and the waiting is done here: turning it off
        and on around each commit on the event loop took two more statements a commit, each
        letting go of the GIL (see _MAX_CHUNK)."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        pause = 0.001
        while not self._transaction(batch):
            if not (wait_for_lock and _is_busy(self.last_error)) or time.monotonic() > deadline:
                return False
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        return True

    def _commit_one(self, job: _Job, wait_for_lock: bool = True) -> bool:
        """Commit one job in a transaction of its own, then call its `done`. Without
        `wait_for_lock` (on the caller's thread), only if SQLite's write lock is free right
        now: False, with nothing done, and the writer thread takes the job. Waiting for it
        there would stop the event loop."""
        batch = _Batch(self._next_learned_seq)
        try:
            mine = batch.add(job.rows)
        except Exception as bad_row:  # the writer thread must outlive one bad row
            self.last_error = bad_row
            error: BaseException | None = bad_row
        else:
            committed = self._write(batch, wait_for_lock)
            if not committed and not wait_for_lock and _is_busy(self.last_error):
                return False  # rolled back: nothing was written
            error = None if committed else _failure(job, self.last_error)
        if error is not None:
            if not wait_for_lock:  # a batch of its own, logged as the writer thread logs one
                self._log_failed_batch(1)
            job.done(error, [])
            return True
        self._next_learned_seq = batch.next_learned_seq
        job.done(None, mine)
        return True


def _is_repeated_id(exc: BaseException) -> bool:
    """A decision's (experiment, event_id) was taken: not the learned table's, whose UNIQUE
    failing would be a bug (an event learned twice)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE and "decisions." in str(exc)


def _is_busy(exc: BaseException) -> bool:
    """Another connection holds the lock (SQLite's extended codes carry the kind in their low
    byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _failure(job: _Job, exc: BaseException) -> BaseException:
    """What a job's failed transaction tells its caller."""
    if isinstance(exc, sqlite3.IntegrityError) and any(
        isinstance(row, DecisionRow) for row in job.rows
    ):
        # The UNIQUE (experiment, event_id) constraint is the duplicate check, so Rank needs no
        # read before writing.
        return DuplicateDecision(str(exc))
    return exc
