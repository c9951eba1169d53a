"""Group commit: one thread owns the write connection and commits queued writes in batches.

Callers hand over a list of rows and a callback; the callback runs on this thread after the
transaction that holds the rows has committed (or failed), in submission order. Batching is what
makes "committed before the RPC returns" cheap under load: one fsync covers every waiting request.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from bandit_server.storage.records import ActivationRow, DecisionRow, LearnedRow, RewardRow

log = structlog.get_logger(__name__)

Row = DecisionRow | RewardRow | ActivationRow | LearnedRow
Done = Callable[[BaseException | None, list[LearnedRow]], None]

MAX_BATCH = 512


@dataclass(slots=True)
class _Job:
    rows: Sequence[Row]
    done: Done


_STOP = object()


def insert(con: sqlite3.Connection, row: Row) -> LearnedRow | None:
    """Insert one row; for a learned row return it with its assigned seq."""
    if isinstance(row, DecisionRow):
        con.execute(
            "INSERT INTO decisions (experiment, event_id, ts, deadline, user_id, deferred, c_json,"
            " action_ids, excluded, ranking, probabilities, model_version)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.experiment,
                row.event_id,
                row.timestamp,
                row.deadline,
                row.user_id,
                int(row.deferred),
                row.c_json,
                json.dumps(row.action_ids, separators=(",", ":")),
                row.excluded_json,
                json.dumps(row.ranking, separators=(",", ":")),
                json.dumps(row.probabilities, separators=(",", ":")),
                row.model_version,
            ),
        )
    elif isinstance(row, RewardRow):
        con.execute(
            "INSERT INTO rewards (experiment, event_id, ts, value, late) VALUES (?,?,?,?,?)",
            (row.experiment, row.event_id, row.timestamp, row.value, int(row.late)),
        )
    elif isinstance(row, ActivationRow):
        con.execute(
            "INSERT INTO activations (experiment, event_id, ts, late) VALUES (?,?,?,?)",
            (row.experiment, row.event_id, row.timestamp, int(row.late)),
        )
    else:
        cursor = con.execute(
            "INSERT INTO learned (experiment, event_id, cost, ts) VALUES (?,?,?,?)",
            (row.experiment, row.event_id, row.cost, row.timestamp),
        )
        assert cursor.lastrowid is not None
        return LearnedRow(row.experiment, row.event_id, row.cost, row.timestamp, cursor.lastrowid)
    return None


class GroupCommitWriter:
    """The single writer of one SQLite file."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._closed = False
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, rows: Sequence[Row], done: Done) -> None:
        if self._closed:
            raise RuntimeError("the decision log is closed")
        self._queue.put(_Job(rows, done))

    def close(self) -> None:
        """Commit everything already submitted, then stop."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            jobs: list[_Job] = [first]  # type: ignore[list-item]
            while len(jobs) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                jobs.append(item)  # type: ignore[arg-type]
            self._commit(jobs)

    def _commit(self, jobs: list[_Job]) -> None:
        con = self._con
        learned: list[list[LearnedRow]] = []
        error: BaseException | None = None
        try:
            con.execute("BEGIN IMMEDIATE")
            for job in jobs:
                mine: list[LearnedRow] = []
                for row in job.rows:
                    done_row = insert(con, row)
                    if done_row is not None:
                        mine.append(done_row)
                learned.append(mine)
            con.execute("COMMIT")
        except BaseException as exc:  # one bad batch must not kill the writer thread
            error = exc
            if con.in_transaction:
                con.execute("ROLLBACK")
        if error is not None:
            # Retry one by one so a single bad row fails only its own request.
            log.warning("log_batch_failed", error=repr(error), jobs=len(jobs))
            for job in jobs:
                self._commit_one(job)
            return
        self.batches += 1
        self.rows += sum(len(job.rows) for job in jobs)
        for job, mine in zip(jobs, learned, strict=True):
            job.done(None, mine)

    def _commit_one(self, job: _Job) -> None:
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            mine = [r for r in (insert(con, row) for row in job.rows) if r is not None]
            con.execute("COMMIT")
        except BaseException as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            job.done(exc, [])
            return
        job.done(None, mine)
