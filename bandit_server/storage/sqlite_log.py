"""The embedded decision log: one SQLite file, one writer thread, per-thread read connections."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from bandit_server.storage import sqlite_schema
from bandit_server.storage.records import (
    ActivationRow,
    DecisionRow,
    ExperimentRow,
    LearnedRow,
    LearnItem,
    RewardRow,
)
from bandit_server.storage.sqlite_schema import ANY_ARGS
from bandit_server.storage.sqlite_writer import Done, GroupCommitWriter, Row

LOG_FILE = "decisions.sqlite3"
T = TypeVar("T")

log = structlog.get_logger(__name__)

_DECISION_COLUMNS = (
    "experiment, event_id, ts, deadline, user_id, deferred, c_json, action_ids, excluded,"
    " ranking, probabilities, model_version"
)


def _decision(row: sqlite3.Row | tuple[object, ...]) -> DecisionRow:
    return DecisionRow(
        experiment=str(row[0]),
        event_id=str(row[1]),
        timestamp=float(row[2]),  # type: ignore[arg-type]
        deadline=float(row[3]),  # type: ignore[arg-type]
        user_id=str(row[4]),
        deferred=bool(row[5]),
        c_json=str(row[6]),
        action_ids=tuple(json.loads(str(row[7]))),
        excluded_json=str(row[8]),
        ranking=tuple(json.loads(str(row[9]))),
        probabilities=tuple(json.loads(str(row[10]))),
        model_version=str(row[11]),
    )


# Values bound per `IN (...)` query: SQLite's default bound-parameter limit is 999.
_IN_CHUNK = 500


def _in_chunks(values: Sequence[T]) -> Iterator[tuple[Sequence[T], str]]:
    """`values` in slices that one `IN (...)` query can take, each with its placeholders."""
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start : start + _IN_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


# The learner's read of a batch: its decisions and its marks come back as one row of JSON
# arrays. Python's sqlite3 lets go of the GIL for every row it steps to (and more), and under
# load the event loop takes it each time: reading row by row, ~25% of the learner's CPU samples
# were waits for the GIL, and it switched out twice as often. The ids go in as JSON too, so
# the statement is always the same one, prepared once, whatever the batch's size.
_LEARN_BATCH = (
    "SELECT"
    " (SELECT json_group_array(json_array(event_id, c_json, ranking, probabilities))"
    "  FROM decisions WHERE experiment = ?1 AND event_id IN (SELECT value FROM json_each(?2))),"
    " (SELECT json_group_array(seq) FROM unlearnable"
    "  WHERE vw_args IN (?3, ?4) AND seq IN (SELECT value FROM json_each(?5)))"
)


# See checkpoint_wal: ~16 MB of 4 KB pages, about 2 s of Ranks at 700 a second.
WAL_RESTART_FRAMES = 4096
RESTART_WAIT_MS = 20


class _NotInOneRow(Exception):
    """A learner batch that _LEARN_BATCH cannot read: an id with U+0000, or too much text."""


class SQLiteDecisionLog:
    """Decisions, rewards, activations and the learner's order, in `data_dir/decisions.sqlite3`."""

    def __init__(
        self,
        data_dir: Path,
        synchronous: str = "FULL",
        schedule: Callable[[Callable[[], None]], object] | None = None,
        here: Callable[[], bool] | None = None,
    ) -> None:
        """`schedule`, `here`: when to commit on the caller's thread (see GroupCommitWriter)."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOG_FILE
        self._synchronous = synchronous
        write_con = sqlite_schema.connect(str(self.path), synchronous)
        sqlite_schema.create(write_con)
        self._write_con = write_con
        self._writer = GroupCommitWriter(write_con, schedule, here)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._read_only = False
        self._writer.start()

    @classmethod
    def open_read_only(cls, data_dir: Path) -> SQLiteDecisionLog:
        """The log for reading only (export): no writer, no schema change, so it can run
        beside a server, of this version or an older one, without changing what it reads."""
        self = cls.__new__(cls)
        self.path = data_dir / LOG_FILE
        self._synchronous = "NORMAL"
        self._local = threading.local()
        self._readers = []
        self._readers_lock = threading.Lock()
        self._read_only = True
        try:
            sqlite_schema.check_readable(self._reader())
        except BaseException:
            self.close()
            raise
        return self

    # -- writing ---------------------------------------------------------------------------

    def on_batch_end(self, hook: Callable[[], object]) -> None:
        """Run `hook` on the writer thread after every committed batch's callbacks."""
        self._writer.on_batch_end = hook

    def submit(self, rows: Sequence[Row], done: Done) -> bool:
        """Queue rows for the next group commit; `done` runs on the writer thread afterwards.
        True: they were committed on this thread instead, and `done` has run here."""
        return self._writer.submit(rows, done)

    def execute_admin(self, sql: str, params: Sequence[object] = ()) -> None:
        """A one-off write outside the hot path (experiments, watermarks, deletion)."""
        con = self._reader()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(sql, tuple(params))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def mark_unlearnable(
        self,
        experiment: str,
        vw_args: str,
        seq: int,
        event_id: str,
        reason: str,
        damaged: bool,
        ts: float,
    ) -> None:
        """Record that the model made with `vw_args` skips learned row `seq`, unless that row
        is gone (its experiment was deleted meanwhile)."""
        self._write_marks(experiment, vw_args, [(seq, event_id)], reason, damaged, ts)

    def mark_skipped(
        self,
        experiment: str,
        rows: Sequence[tuple[int, str]],
        reason: str,
        ts: float,
        forget_breaks: int,
    ) -> None:
        """Record the learned rows `rows` (seq, event_id) as skipped on request, whatever the
        vw_args (ANY_ARGS: the operator wants them out of every model), and forget the marks,
        under any vw_args, of the run of up to `forget_breaks` events found to break the model
        right after each: a skipped event may be what left the model fragile (see
        recovery.CASCADE), and a replay marks again those that still break it, one replay
        each."""
        self._write_marks(experiment, ANY_ARGS, rows, reason, False, ts, forget_breaks)

    def _write_marks(
        self,
        experiment: str,
        vw_args: str,
        rows: Sequence[tuple[int, str]],
        reason: str,
        damaged: bool,
        ts: float,
        forget_breaks: int = 0,
    ) -> None:
        """In one transaction, on a connection of its own: the caller may be iterating
        `learn_items` on this thread's reader."""
        # FULL whatever the log's setting: a checkpoint made after this skips the event and is
        # fsynced, so a power cut must not keep the checkpoint yet lose the mark.
        con = sqlite_schema.connect(str(self.path), "FULL")
        try:
            with con:
                con.execute("BEGIN IMMEDIATE")
                # Under every vw_args the experiment has marks for: a retrain back to earlier
                # settings must look at them again too.
                marked_args = (
                    [
                        args
                        for (args,) in con.execute(
                            "SELECT DISTINCT vw_args FROM unlearnable"
                            " WHERE experiment = ? AND vw_args <> ?",
                            (experiment, ANY_ARGS),
                        )
                    ]
                    if forget_breaks
                    else []
                )
                for (seq, _), forget_args in itertools.product(rows, marked_args):
                    following = con.execute(
                        "SELECT l.seq, EXISTS (SELECT 1 FROM unlearnable u"
                        "   WHERE u.seq = l.seq AND u.vw_args = ? AND u.damaged = 1)"
                        " FROM learned l WHERE l.experiment = ? AND l.seq > ?"
                        " ORDER BY l.seq LIMIT ?",
                        (forget_args, experiment, seq, forget_breaks),
                    ).fetchall()
                    for broken_seq, broken in following:
                        if not broken:
                            break
                        con.execute(
                            "DELETE FROM unlearnable WHERE seq = ? AND vw_args = ?",
                            (broken_seq, forget_args),
                        )
                con.executemany(
                    "INSERT OR IGNORE INTO unlearnable"
                    " (seq, vw_args, experiment, event_id, reason, damaged, ts)"
                    " SELECT ?, ?, ?, ?, ?, ?, ?"
                    " WHERE EXISTS (SELECT 1 FROM learned WHERE seq = ? AND experiment = ?)",
                    [
                        (seq, vw_args, experiment, event_id, reason, int(damaged), ts, seq,
                         experiment)
                        for seq, event_id in rows
                    ],
                )  # fmt: skip
        finally:
            con.close()

    def follows_broken_rows(
        self, experiment: str, vw_args: str, before_seq: int, count: int
    ) -> bool:
        """Whether the `count` learned rows of `experiment` just before `before_seq` are all
        marked as having broken the model made with `vw_args`."""
        flags = (
            self._reader()
            .execute(
                "SELECT EXISTS (SELECT 1 FROM unlearnable u"
                "   WHERE u.seq = l.seq AND u.vw_args = ? AND u.damaged = 1)"
                " FROM learned l WHERE l.experiment = ? AND l.seq < ? ORDER BY l.seq DESC LIMIT ?",
                (vw_args, experiment, before_seq, count),
            )
            .fetchall()
        )
        return len(flags) == count and all(flag for (flag,) in flags)

    def learned_seqs(self, experiment: str, event_ids: Sequence[str]) -> dict[str, int]:
        """The learned-log seq of each of `event_ids` that the experiment has learned rows for."""
        found: dict[str, int] = {}
        for chunk, marks in _in_chunks(event_ids):
            found.update(
                self._reader().execute(
                    "SELECT event_id, seq FROM learned"
                    f" WHERE experiment = ? AND event_id IN ({marks})",
                    (experiment, *chunk),
                )
            )
        return found

    def skipped_count(self, experiment: str) -> int:
        """Events of the experiment skipped on request (under ANY_ARGS)."""
        return int(
            self._reader()
            .execute(
                "SELECT COUNT(*) FROM unlearnable WHERE experiment = ? AND vw_args = ?",
                (experiment, ANY_ARGS),
            )
            .fetchone()[0]
        )

    def unlearnable_count(self, experiment: str, vw_args: str) -> int:
        return int(
            self._reader()
            .execute(
                "SELECT COUNT(DISTINCT seq) FROM unlearnable"
                " WHERE experiment = ? AND vw_args IN (?, ?)",
                (experiment, vw_args, ANY_ARGS),
            )
            .fetchone()[0]
        )

    def last_learned_seq(self) -> int:
        return self._writer.last_learned_seq

    def flush_and_stop_writing(self) -> None:
        """Commit everything submitted so far; later submits fail. Reads keep working."""
        self._writer.close()

    def checkpoint_wal(self) -> int:
        """Copy committed WAL pages into the database file, mostly without blocking writers, and
        let the WAL start over once it is long; returns its length, in frames, found first.

        A write goes back to the WAL's start only if every frame was copied before it began.
        Under steady traffic a PASSIVE checkpoint never gets there (writes land while it copies),
        so the WAL grew for as long as the traffic lasted: ~8 MB a second at 700 Ranks a
        second, measured. Past WAL_RESTART_FRAMES a FULL checkpoint follows, which holds writers
        off while it copies what the PASSIVE one left (5-10 ms, measured); a commit that finds
        the lock taken meanwhile goes to the writer thread, which waits for it.

        Only when the PASSIVE one copied every frame: otherwise a reader still holds an older
        view (an export, a rebuild's replay), and FULL would hold writers off while it waited
        for that reader, then give up. The WAL then grows until the reader is done."""
        con = self._reader()
        _, frames, copied = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= WAL_RESTART_FRAMES and copied == frames:
            # Short: FULL holds the write lock while it waits for readers mid-query.
            with sqlite_schema.waiting_at_most(con, RESTART_WAIT_MS):
                busy, _, _ = con.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
            if busy:
                log.info("wal_restart_deferred", frames=frames)  # retried on the next call
        return int(frames)

    def close(self) -> None:
        if not self._read_only:
            self._writer.close()
            self._write_con.close()
        with self._readers_lock:
            for con in self._readers:
                con.close()
            self._readers.clear()

    # -- reading ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._read_only:
            return sqlite_schema.connect_read_only(str(self.path))
        return sqlite_schema.connect(str(self.path), self._synchronous)

    def _reader(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = self._connect()
            self._local.con = con
            with self._readers_lock:
                self._readers.append(con)
        return con

    def experiments(self) -> list[ExperimentRow]:
        rows = self._reader().execute(
            "SELECT name, config, epoch, created_at, updated_at FROM experiments ORDER BY name"
        )
        return [ExperimentRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def decision(self, experiment: str, event_id: str) -> DecisionRow | None:
        row = (
            self._reader()
            .execute(
                f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE experiment = ? AND event_id = ?",
                (experiment, event_id),
            )
            .fetchone()
        )
        return None if row is None else _decision(row)

    def rewards(self, experiment: str, event_id: str) -> list[RewardRow]:
        rows = self._reader().execute(
            "SELECT ts, value, late FROM rewards"
            " WHERE experiment = ? AND event_id = ? ORDER BY seq",
            (experiment, event_id),
        )
        return [RewardRow(experiment, event_id, r[0], r[1], bool(r[2])) for r in rows]

    def activations(self, experiment: str, event_id: str) -> list[ActivationRow]:
        rows = self._reader().execute(
            "SELECT ts, late FROM activations WHERE experiment = ? AND event_id = ? ORDER BY seq",
            (experiment, event_id),
        )
        return [ActivationRow(experiment, event_id, r[0], bool(r[1])) for r in rows]

    def is_learned(self, experiment: str, event_id: str) -> bool:
        row = (
            self._reader()
            .execute(
                "SELECT 1 FROM learned WHERE experiment = ? AND event_id = ?",
                (experiment, event_id),
            )
            .fetchone()
        )
        return row is not None

    def max_learned_seq(self, experiment: str) -> int:
        row = (
            self._reader()
            .execute(
                "SELECT COALESCE(MAX(seq), 0) FROM learned WHERE experiment = ?", (experiment,)
            )
            .fetchone()
        )
        return int(row[0])

    def learned_rows(
        self, experiment: str, after_seq: int, up_to_seq: int, limit: int = -1
    ) -> list[LearnedRow]:
        """The experiment's learned rows with after_seq < seq <= up_to_seq, in learned order;
        the first `limit` of them (-1: all)."""
        rows = self._reader().execute(
            "SELECT event_id, cost, ts, seq FROM learned"
            " WHERE experiment = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (experiment, after_seq, up_to_seq, limit),
        )
        return [LearnedRow(experiment, r[0], r[1], r[2], r[3]) for r in rows]

    def learn_items(
        self, experiment: str, vw_args: str, after_seq: int = 0
    ) -> Generator[LearnItem, None, None]:
        """Learned events after `after_seq`, in learning order, with their example text; those
        marked unlearnable under `vw_args` left out."""
        rows = self._reader().execute(
            "SELECT l.seq, l.event_id, d.c_json, d.ranking, d.probabilities, l.cost"
            " FROM learned l JOIN decisions d"
            " ON d.experiment = l.experiment AND d.event_id = l.event_id"
            " WHERE l.experiment = ? AND l.seq > ?"
            " AND NOT EXISTS (SELECT 1 FROM unlearnable u"
            "   WHERE u.seq = l.seq AND u.vw_args IN (?, ?))"
            " ORDER BY l.seq",
            (experiment, after_seq, vw_args, ANY_ARGS),
        )
        for seq, event_id, c_json, ranking, probabilities, cost in rows:
            yield LearnItem(
                seq,
                event_id,
                c_json,
                json.loads(ranking)[0],
                json.loads(probabilities)[0],
                cost,
            )

    def learn_batch(
        self, experiment: str, rows: Sequence[LearnedRow], vw_args: str | None = None
    ) -> list[LearnItem]:
        """The example text and label of each learned row, in the given order, but those marked
        unlearnable under `vw_args`: one query whose one row holds them all (_LEARN_BATCH), or,
        where that cannot work, a query or two per 500 rows."""
        try:
            found, marked = self._read_batch_at_once(experiment, rows, vw_args)
        except _NotInOneRow:
            found, marked = self._read_batch_by_rows(experiment, rows, vw_args)
        items = []
        for row in rows:
            if row.seq in marked:
                continue
            if row.event_id not in found:
                raise LookupError(f"learned event {experiment}/{row.event_id} has no decision row")
            c_json, ranking, probabilities = found[row.event_id]
            chosen = int(ranking[1 : ranking.find(",") if "," in ranking else -1])
            probability = float(json.loads(probabilities)[0])
            items.append(LearnItem(row.seq, row.event_id, c_json, chosen, probability, row.cost))
        return items

    def _read_batch_at_once(
        self, experiment: str, rows: Sequence[LearnedRow], vw_args: str | None
    ) -> tuple[dict[str, tuple[str, str, str]], set[int]]:
        ids = [row.event_id for row in rows]
        if any("\x00" in event_id for event_id in ids):
            raise _NotInOneRow  # SQLite's json_each cuts a string at U+0000
        seqs = "[]" if vw_args is None else json.dumps([row.seq for row in rows])
        try:
            decisions, marks = (
                self._reader()
                .execute(_LEARN_BATCH, (experiment, json.dumps(ids), vw_args, ANY_ARGS, seqs))
                .fetchone()
            )
        except sqlite3.DataError as exc:  # past SQLite's longest string (1 GB): huge requests
            raise _NotInOneRow from exc
        return {d[0]: (d[1], d[2], d[3]) for d in json.loads(decisions)}, set(json.loads(marks))

    def _read_batch_by_rows(
        self, experiment: str, rows: Sequence[LearnedRow], vw_args: str | None
    ) -> tuple[dict[str, tuple[str, str, str]], set[int]]:
        found: dict[str, tuple[str, str, str]] = {}
        marked: set[int] = set()
        for chunk, marks in _in_chunks(rows):
            query = self._reader().execute(
                "SELECT event_id, c_json, ranking, probabilities FROM decisions"
                f" WHERE experiment = ? AND event_id IN ({marks})",
                (experiment, *(row.event_id for row in chunk)),
            )
            found.update((r[0], (r[1], r[2], r[3])) for r in query)
            if vw_args is not None:
                marked.update(
                    seq
                    for (seq,) in self._reader().execute(
                        f"SELECT seq FROM unlearnable WHERE vw_args IN (?, ?) AND seq IN ({marks})",
                        (vw_args, ANY_ARGS, *(row.seq for row in chunk)),
                    )
                )
        return found, marked

    def learned_count(self, experiment: str, up_to_seq: int | None = None) -> int:
        if up_to_seq is None:
            sql, params = "SELECT COUNT(*) FROM learned WHERE experiment = ?", (experiment,)
        else:
            sql = "SELECT COUNT(*) FROM learned WHERE experiment = ? AND seq <= ?"
            params = (experiment, up_to_seq)  # type: ignore[assignment]
        return int(self._reader().execute(sql, params).fetchone()[0])

    def closed_until(self, experiment: str) -> float:
        row = (
            self._reader()
            .execute("SELECT closed_until FROM watermarks WHERE experiment = ?", (experiment,))
            .fetchone()
        )
        return float("-inf") if row is None else float(row[0])

    def open_decisions(
        self, experiment: str, after_deadline: float, up_to: float
    ) -> Iterator[DecisionRow]:
        """Decisions not yet learned whose window closes in (`after_deadline`, `up_to`], by
        deadline."""
        rows = self._reader().execute(
            f"SELECT {_DECISION_COLUMNS} FROM decisions d"
            " WHERE d.experiment = ? AND d.deadline > ? AND d.deadline <= ?"
            " AND NOT EXISTS (SELECT 1 FROM learned l"
            "   WHERE l.experiment = d.experiment AND l.event_id = d.event_id)"
            " ORDER BY d.deadline, d.seq",
            (experiment, after_deadline, up_to),
        )
        for row in rows:
            yield _decision(row)

    def open_inputs(
        self, experiment: str, after_deadline: float, up_to: float
    ) -> tuple[list[tuple[str, float]], set[str]]:
        """For the decisions `open_decisions` lists: their in-window rewards (event id, value)
        in arrival order, and the ids of those activated in time. Two queries in all."""
        con = self._reader()
        scope = (
            " JOIN decisions d ON d.experiment = x.experiment AND d.event_id = x.event_id"
            " WHERE x.experiment = ? AND d.deadline > ? AND d.deadline <= ? AND x.late = 0"
            " AND NOT EXISTS (SELECT 1 FROM learned l"
            "   WHERE l.experiment = d.experiment AND l.event_id = d.event_id)"
        )
        params = (experiment, after_deadline, up_to)
        rewards = con.execute(
            f"SELECT x.event_id, x.value FROM rewards x{scope} ORDER BY x.seq", params
        ).fetchall()
        activated = {
            row[0] for row in con.execute(f"SELECT x.event_id FROM activations x{scope}", params)
        }
        return [(str(e), float(v)) for e, v in rewards], activated

    def export_rows(
        self, experiment: str
    ) -> Iterator[tuple[DecisionRow, float | None, int | None, bool]]:
        """Every decision with (cost, learned seq) when learned and whether it was activated.

        Learned decisions come first in learning order, then the unlearned ones in decision order,
        so training on the learned lines in file order repeats the learner exactly. Events the
        model skipped as unlearnable (under the experiment's current vw_args) count as unlearned.
        """
        # A connection of its own, in one read transaction for both queries: an event learned
        # between them would otherwise be in neither (export may run beside a live server),
        # and the thread's shared reader stays free for other calls while this one is paused.
        con = self._connect()
        try:
            con.execute("BEGIN")
            yield from self._export_rows(con, experiment)
        finally:
            con.close()

    def _export_rows(
        self, con: sqlite3.Connection, experiment: str
    ) -> Iterator[tuple[DecisionRow, float | None, int | None, bool]]:
        config = con.execute(
            "SELECT config FROM experiments WHERE name = ?", (experiment,)
        ).fetchone()
        vw_args = str(json.loads(config[0])["vw_args"]) if config else ""
        skipped = (
            "EXISTS (SELECT 1 FROM unlearnable u"
            " WHERE u.seq = l.seq AND u.vw_args IN (:vw_args, :any_args))"
            if sqlite_schema.has_unlearnable_table(con)  # in this transaction: a version-1 log
            else "0"  # has none, unless a server upgraded it since
        )
        learned = con.execute(
            f"SELECT {', '.join('d.' + c.strip() for c in _DECISION_COLUMNS.split(','))},"
            " l.cost, l.seq FROM learned l JOIN decisions d"
            " ON d.experiment = l.experiment AND d.event_id = l.event_id"
            f" WHERE l.experiment = :experiment AND NOT {skipped} ORDER BY l.seq",
            {"experiment": experiment, "vw_args": vw_args, "any_args": ANY_ARGS},
        )
        for row in learned:
            yield _decision(row), float(row[12]), int(row[13]), True
        unlearned = con.execute(
            f"SELECT {_DECISION_COLUMNS},"
            " EXISTS (SELECT 1 FROM activations a"
            "   WHERE a.experiment = d.experiment AND a.event_id = d.event_id)"
            " FROM decisions d WHERE d.experiment = :experiment"
            " AND NOT EXISTS (SELECT 1 FROM learned l"
            f"   WHERE l.experiment = d.experiment AND l.event_id = d.event_id AND NOT {skipped})"
            " ORDER BY d.seq",
            {"experiment": experiment, "vw_args": vw_args, "any_args": ANY_ARGS},
        )
        for row in unlearned:
            yield _decision(row), None, None, bool(row[12])
