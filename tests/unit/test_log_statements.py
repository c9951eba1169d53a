"""How the decision log talks to SQLite: few statements a commit and one a learner batch read,
because Python's sqlite3 lets go of the GIL at each step (see sqlite_writer._MAX_CHUNK). The
rows must still come back exactly as written."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bandit_server.storage import sqlite_writer
from bandit_server.storage.records import (
    ActivationRow,
    LearnedRow,
    RewardRow,
    WatermarkRow,
)
from bandit_server.storage.sqlite_log import SQLiteDecisionLog
from bandit_server.storage.sqlite_writer import _Batch, _chunks
from tests.unit.test_storage import ManualLog, _decision


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[ManualLog]:
    log = ManualLog(tmp_path / "data")
    yield log
    log.log.close()


def _statements_run(con: sqlite3.Connection) -> list[str]:
    """Every statement `con` runs from now on, by its first word and table."""
    seen: list[str] = []
    con.set_trace_callback(lambda sql: seen.append(" ".join(sql.split()[:3])))
    return seen


@pytest.mark.parametrize("count", [*range(0, 130), 511, 512])
def test_rows_go_in_chunks_of_falling_powers_of_two_up_to_64(count: int) -> None:
    rows = [(i,) for i in range(count)]
    chunks = list(_chunks(rows))
    assert [row for chunk in chunks for row in chunk] == rows
    sizes = [len(chunk) for chunk in chunks]
    assert all(size in (1, 2, 4, 8, 16, 32, 64) for size in sizes)
    assert sizes == sorted(sizes, reverse=True)
    # At most one of each size below 64: the statements a batch needs stay few.
    assert len([s for s in sizes if s < 64]) == len({s for s in sizes if s < 64})


def test_a_batch_of_one_table_is_one_statement_and_others_one_per_chunk() -> None:
    one_table = _Batch(1)
    one_table.add([_decision(f"d{i}") for i in range(64)])
    assert len(one_table.statements()) == 1
    mixed = _Batch(1)
    mixed.add([_decision(f"d{i}") for i in range(100)])  # 64 + 32 + 4
    mixed.add([RewardRow("exp", "d1", 1.0, 0.5, False), WatermarkRow("exp", 2.0)])
    assert [sql.split()[2] for sql, _ in mixed.statements()] == [
        "decisions",
        "decisions",
        "decisions",
        "rewards",
        "watermarks",
    ]


def test_a_rank_committed_on_the_callers_thread_is_one_statement(tmp_path: Path) -> None:
    """A Rank's commit on the event loop is one INSERT: no BEGIN, COMMIT or busy-timeout
    PRAGMAs around it, each of which would let go of the GIL too."""
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL", here=lambda: True)
    try:
        seen = _statements_run(log._write_con)
        assert log.submit([_decision("e1")], lambda error, learned: None) is True
        assert seen == ["INSERT INTO decisions"]
        assert log.decision("exp", "e1") == _decision("e1")
    finally:
        log.close()


def test_a_mixed_batch_of_many_rows_reads_back_exactly(manual: ManualLog) -> None:
    """Chunked multi-row INSERTs keep every value and the order of learned seqs; the last of
    two watermarks for an experiment in one batch wins, as with one INSERT a row."""
    decisions = [
        _decision(
            f'e{i}"\\é',
            probabilities=(0.1 + 0.2, 1 / 3, 1 - (0.1 + 0.2) - 1 / 3),
            c_json='{"U":{"s":"\\u0001 😀 \\"q\\""}}',
            user_id=f"user-{i}" if i % 2 else "",
            deferred=bool(i % 3),
        )
        for i in range(101)
    ]
    rewards = [RewardRow("exp", f'e{i}"\\é', 10.0 + i, i / 7, bool(i % 2)) for i in range(70)]
    learned = [LearnedRow("exp", f'e{i}"\\é', -i / 3, 20.0 + i) for i in range(67)]
    results = manual.submit(
        [
            *decisions,
            *rewards,
            ActivationRow("exp", 'e5"\\é', 30.0, True),
            *learned,
            WatermarkRow("exp", 5.0),
            WatermarkRow("exp", 6.5),
        ]
    )
    manual.commit()
    [(error, assigned)] = results
    assert error is None
    assert [row.seq for row in assigned] == list(range(1, 68))
    assert [manual.log.decision("exp", row.event_id) for row in decisions] == decisions
    assert manual.log.rewards("exp", 'e3"\\é') == [rewards[3]]
    assert manual.log.activations("exp", 'e5"\\é') == [ActivationRow("exp", 'e5"\\é', 30.0, True)]
    assert manual.log.learned_rows("exp", 0, 100) == assigned
    assert manual.log.closed_until("exp") == 6.5


def test_a_duplicate_inside_a_multi_row_insert_fails_only_its_own_job(manual: ManualLog) -> None:
    first = manual.submit([_decision("a")])
    dup = manual.submit([_decision("a")])
    last = manual.submit([_decision("b")])
    manual.commit()
    assert first == [(None, [])] and last == [(None, [])]
    assert type(dup[0][0]).__name__ == "DuplicateDecision"
    assert manual.log.decision("exp", "b") is not None


def test_the_writer_waits_for_another_connections_lock_then_gives_up_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write connection's own busy timeout is 0; the writer thread waits for the lock
    itself, up to BUSY_TIMEOUT_SECONDS, and then fails the job with SQLite's error, writing
    nothing. The next job commits once the lock is free."""
    monkeypatch.setattr(sqlite_writer, "BUSY_TIMEOUT_SECONDS", 0.3)
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL")
    other = sqlite3.connect(log.path, isolation_level=None)
    outcomes: dict[str, BaseException | None] = {}
    settled = {name: threading.Event() for name in ("locked", "later")}

    def done(name: str) -> Callable[[BaseException | None, list[LearnedRow]], None]:
        def record(error: BaseException | None, learned: list[LearnedRow]) -> None:
            outcomes[name] = error
            settled[name].set()

        return record

    try:
        assert log._write_con.execute("PRAGMA busy_timeout").fetchone() == (0,)
        other.execute("BEGIN IMMEDIATE")
        log.submit([_decision("locked")], done("locked"))
        assert settled["locked"].wait(timeout=30)
        assert isinstance(outcomes["locked"], sqlite3.OperationalError)
        assert "locked" in str(outcomes["locked"])
        other.execute("COMMIT")
        log.submit([_decision("later")], done("later"))
        assert settled["later"].wait(timeout=30)
        assert outcomes["later"] is None
        assert log.decision("exp", "locked") is None
        assert log.decision("exp", "later") is not None
    finally:
        other.close()
        log.close()


def test_learn_batch_reads_a_batch_in_one_statement_and_keeps_the_text_exact(
    manual: ManualLog,
) -> None:
    """The batch's decisions and marks come back as one row of JSON; example text with
    control characters, quotes, backslashes and non-ASCII, odd event ids, and probabilities
    bit for bit survive the round trip."""
    c_json = '{"U":{"s":"\\u0001\\t é 😀 \\"q\\" \\\\"},"_multi":[{"A":{"v":"0"}}]}'
    ids = ["plain", 'quote"d', "back\\slash", "ü😀", "tab\tid"]
    manual.submit(
        [
            _decision(event_id, c_json=c_json, ranking=(i % 3, 0, 1), probabilities=(0.1 + 0.2,))
            for i, event_id in enumerate(ids)
        ]
    )
    learned = manual.submit([LearnedRow("exp", event_id, -1.5, 0.0) for event_id in ids])
    manual.commit()
    [(_, rows)] = learned
    manual.log.mark_unlearnable("exp", "--a", rows[1].seq, ids[1], "broke it", True, 1.0)
    seen = _statements_run(manual.log._reader())
    items = manual.log.learn_batch("exp", rows, "--a")
    assert len(seen) == 1
    assert [item.event_id for item in items] == [ids[0], *ids[2:]]
    assert all(item.c_json == c_json for item in items)
    assert [item.chosen_index for item in items] == [0, 2, 0, 1]
    assert all(item.probability == 0.1 + 0.2 for item in items)
    assert [item.event_id for item in manual.log.learn_batch("exp", rows)] == ids


def test_the_writer_commits_once_another_connections_lock_is_let_go(tmp_path: Path) -> None:
    """A commit that finds the write lock taken is tried again, not failed, while the lock is
    held: the job commits once it is free."""
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL")
    other = sqlite3.connect(log.path, isolation_level=None)
    writer = log._writer
    transaction = writer._transaction
    refused, committed = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def watched(batch: _Batch) -> bool:
        ok = transaction(batch)
        if not ok:
            refused.set()
        return ok

    def done(error: BaseException | None, learned: list[LearnedRow]) -> None:
        outcome.append(error)
        committed.set()

    writer._transaction = watched  # type: ignore[method-assign]
    try:
        other.execute("BEGIN IMMEDIATE")
        log.submit([_decision("waits")], done)
        assert refused.wait(timeout=30)  # the writer found the lock taken
        assert not committed.is_set()
        other.execute("COMMIT")
        assert committed.wait(timeout=30)
        assert outcome == [None]
        assert log.decision("exp", "waits") is not None
    finally:
        other.close()
        log.close()


def test_learn_batch_reads_ids_with_nul_row_by_row(manual: ManualLog) -> None:
    """SQLite's json_each cuts a string at U+0000, so such a batch is read as before, a row
    at a time, and nothing is lost or stalls."""
    ids = ["plain", "nul\x00inside"]
    manual.submit([_decision(event_id) for event_id in ids])
    learned = manual.submit([LearnedRow("exp", event_id, -1.0, 0.0) for event_id in ids])
    manual.commit()
    [(_, rows)] = learned
    manual.log.mark_unlearnable("exp", "--a", rows[0].seq, ids[0], "broke it", True, 1.0)
    assert [item.event_id for item in manual.log.learn_batch("exp", rows)] == ids
    assert [item.event_id for item in manual.log.learn_batch("exp", rows, "--a")] == ids[1:]


def test_learn_batch_past_sqlites_longest_string_is_read_row_by_row(manual: ManualLog) -> None:
    """The one row of _LEARN_BATCH holds the whole batch's text; past SQLite's longest string
    (1 GB; lowered here) the batch is read a row at a time instead."""
    ids = [f"e{i}" for i in range(200)]
    manual.submit([_decision(event_id) for event_id in ids])
    learned = manual.submit([LearnedRow("exp", event_id, -1.0, 0.0) for event_id in ids])
    manual.commit()
    [(_, rows)] = learned
    reader = manual.log._reader()
    reader.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)  # one row's text fits, 200 do not
    with pytest.raises(sqlite3.DataError):
        reader.execute("SELECT json_group_array(c_json) FROM decisions").fetchone()
    items = manual.log.learn_batch("exp", rows, "--a")
    assert [item.event_id for item in items] == ids
    assert all(item.c_json == _decision("x").c_json for item in items)


def test_a_repeated_learned_row_is_a_warning_not_a_repeated_id(manual: ManualLog) -> None:
    """Only a decision's repeated event id is Rank's retry path; the learned table's UNIQUE
    failing (an event learned twice) is a bug to be seen."""
    manual.submit([_decision("a"), LearnedRow("exp", "a", -1.0, 0.0)])
    manual.commit()
    with capture_logs() as events:
        manual.submit([LearnedRow("exp", "a", -1.0, 0.0)])
        manual.commit()
    failed = [e for e in events if e["event"] == "log_batch_failed"]
    assert [(e["log_level"], e["repeated_id"]) for e in failed] == [("warning", False)]
