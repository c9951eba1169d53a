"""Model checkpoints on disk and the SQLite decision log, on real temporary files."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bandit_server.core.experiment import ExperimentConfig
from bandit_server.errors import InvalidArgument
from bandit_server.export import iter_dsjson
from bandit_server.storage import sqlite_log
from bandit_server.storage.models import Checkpoint, DirectoryModelStore
from bandit_server.storage.records import (
    ActivationRow,
    DecisionRow,
    DeleteExperimentRow,
    DuplicateDecision,
    LearnedRow,
    RewardRow,
)
from bandit_server.storage.sqlite_log import WAL_RESTART_FRAMES, SQLiteDecisionLog
from bandit_server.storage.sqlite_schema import (
    ANY_ARGS,
    BUSY_TIMEOUT_SECONDS,
    SKIPPED_ON_REQUEST,
)
from bandit_server.storage.sqlite_writer import MAX_HERE_ROWS, Row

# -- DirectoryModelStore ---------------------------------------------------------------------


def _checkpoint(seq: int, experiment: str = "exp") -> Checkpoint:
    return Checkpoint(
        experiment=experiment,
        vw_args="--cb_explore_adf",
        learned_seq=seq,
        learned_count=seq * 2,
        created_at=1000.0 + seq,
        model=b"model-%d\x00\xff" % seq,
    )


def test_store_returns_the_newest_checkpoint_and_keeps_only_n(tmp_path: Path) -> None:
    """Only the newest `keep` checkpoints remain; latest() returns the newest as saved."""
    store = DirectoryModelStore(tmp_path, keep=3)
    for seq in (1, 2, 3, 9, 10):  # 9 -> 10 checks numeric, not string, order
        store.save(_checkpoint(seq))
    assert store.latest("exp", "") == _checkpoint(10)
    names = sorted(p.name for p in (tmp_path / "exp").iterdir())
    assert names == [f"{seq:015d}.{ext}" for seq in (3, 9, 10) for ext in ("json", "vw")]


def test_store_without_checkpoints_returns_none(tmp_path: Path) -> None:
    """An experiment that never saved has no latest checkpoint."""
    assert DirectoryModelStore(tmp_path).latest("exp", "") is None


def test_store_skips_a_checkpoint_whose_sidecar_is_missing(tmp_path: Path) -> None:
    """A model file without its sidecar (a crash between the two writes) is ignored."""
    store = DirectoryModelStore(tmp_path)
    store.save(_checkpoint(1))
    store.save(_checkpoint(2))
    (tmp_path / "exp" / f"{2:015d}.json").unlink()
    assert store.latest("exp", "") == _checkpoint(1)


@pytest.mark.parametrize("sidecar", ["", "{not json", '{"experiment": "exp"', "\xff\xfe"])
def test_store_skips_a_checkpoint_whose_sidecar_is_corrupt(tmp_path: Path, sidecar: str) -> None:
    """An unreadable sidecar makes latest() fall back to the older checkpoint."""
    store = DirectoryModelStore(tmp_path)
    store.save(_checkpoint(1))
    store.save(_checkpoint(2))
    (tmp_path / "exp" / f"{2:015d}.json").write_text(sidecar, encoding="latin-1")
    assert store.latest("exp", "") == _checkpoint(1)


@pytest.mark.parametrize("sidecar", ["{}", "null", "[]"])
def test_store_skips_a_sidecar_that_is_json_but_not_a_checkpoint(
    tmp_path: Path, sidecar: str
) -> None:
    """A sidecar that is JSON but not a checkpoint's fields is skipped like a corrupt one."""
    store = DirectoryModelStore(tmp_path)
    store.save(_checkpoint(1))
    store.save(_checkpoint(2))
    (tmp_path / "exp" / f"{2:015d}.json").write_text(sidecar)
    assert store.latest("exp", "") == _checkpoint(1)


def test_store_skips_a_checkpoint_whose_model_file_is_missing(tmp_path: Path) -> None:
    """A sidecar whose model file is gone is skipped too."""
    store = DirectoryModelStore(tmp_path)
    store.save(_checkpoint(1))
    store.save(_checkpoint(2))
    (tmp_path / "exp" / f"{2:015d}.vw").unlink()
    assert store.latest("exp", "") == _checkpoint(1)


def test_store_delete_removes_one_experiment_only(tmp_path: Path) -> None:
    """delete() removes every checkpoint of one experiment and leaves the others."""
    store = DirectoryModelStore(tmp_path)
    store.save(_checkpoint(1, "a"))
    store.save(_checkpoint(1, "b"))
    store.delete("a")
    assert store.latest("a", "") is None
    assert not (tmp_path / "a").exists()
    assert store.latest("b", "") == _checkpoint(1, "b")
    store.delete("never-existed")  # harmless


def test_a_save_removes_checkpoints_of_other_incarnations(tmp_path: Path) -> None:
    """After a delete and re-create, seqs can restart lower: the old incarnation's files must
    not crowd out (by seq order) the new one's, so a save removes them."""
    store = DirectoryModelStore(tmp_path, keep=2)
    for seq in (50, 60, 70):
        store.save(replace(_checkpoint(seq), epoch="old"))
    for seq in (1, 2, 3):
        store.save(replace(_checkpoint(seq), epoch="new"))
    assert store.latest("exp", "new") == replace(_checkpoint(3), epoch="new")
    assert store.latest("exp", "old") is None
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == [
        "000000000000002.json", "000000000000002.vw", "000000000000003.json", "000000000000003.vw",
    ]  # fmt: skip


# -- SQLiteDecisionLog -----------------------------------------------------------------------

Result = tuple[BaseException | None, list[LearnedRow]]


def _decision(event_id: str, experiment: str = "exp", **changes: object) -> DecisionRow:
    fields: dict[str, object] = {
        "experiment": experiment,
        "event_id": event_id,
        "timestamp": 1_700_000_000.125,
        "deadline": 1_700_000_600.125,
        "user_id": "u",
        "deferred": False,
        "c_json": '{"U":{"s":"ä"},"_multi":[{"A":{"v":"0"}},{"A":{"v":"1"}},{"A":{"v":"2"}}]}',
        "action_ids": ("a0", "a1", "a2"),
        "excluded_json": "[]",
        "ranking": (2, 0, 1),
        "probabilities": (0.8666666666666667, 0.06666666666666667, 0.06666666666666667),
        "model_version": "v1",
    }
    fields.update(changes)
    return DecisionRow(**fields)  # type: ignore[arg-type]


def _learned(event_id: str, cost: float = -1.0, experiment: str = "exp") -> LearnedRow:
    return LearnedRow(experiment, event_id, cost, 1_700_000_100.0)


def _learned_row(event_id: str, seq: int) -> LearnedRow:
    """A learned row as committed: with its seq."""
    return LearnedRow("exp", event_id, -1.0, 1_700_000_100.0, seq)


class ManualLog:
    """A decision log whose commits run only when the test says so, on the test's thread, so
    which jobs share a batch is decided by the test, not by thread timing."""

    def __init__(self, data_dir: Path) -> None:
        self._scheduled: list[Callable[[], None]] = []
        self.log = SQLiteDecisionLog(
            data_dir, synchronous="NORMAL", schedule=self._scheduled.append
        )

    def submit(self, rows: Sequence[Row]) -> list[Result]:
        """Queue one job; its (error, learned rows) appear in the returned list on commit."""
        results: list[Result] = []
        self.log.submit(rows, lambda error, learned: results.append((error, learned)))
        return results

    def commit(self) -> None:
        """Commit every job queued so far, as one batch."""
        while self._scheduled:
            self._scheduled.pop(0)()


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[ManualLog]:
    log = ManualLog(tmp_path / "data")
    yield log
    log.log.close()


def test_a_decision_reads_back_exactly_as_written(manual: ManualLog) -> None:
    """Every field of a decision, probabilities bit for bit and non-ASCII text, survives."""
    row = _decision("e1", probabilities=(0.1 + 0.2, 1 / 3, 1 - (0.1 + 0.2) - 1 / 3), deferred=True)
    results = manual.submit([row])
    manual.commit()
    assert results == [(None, [])]
    assert manual.log.decision("exp", "e1") == row
    assert manual.log.decision("exp", "missing") is None


def test_action_ids_with_json_special_characters_read_back_exactly(manual: ManualLog) -> None:
    """Ids are free text: quotes, backslashes, control characters and non-ASCII survive."""
    ids = ('say "hi"', "back\\slash", "tab\tnew\nline\x00", "ünï 🎲", "/")
    row = _decision("odd", action_ids=ids, ranking=(4, 3, 2, 1, 0), probabilities=(0.2,) * 5)
    manual.submit([row])
    manual.commit()
    assert manual.log.decision("exp", "odd") == row


def test_a_duplicate_in_a_batch_fails_only_its_own_job(manual: ManualLog) -> None:
    """A duplicate decision fails only its own job (all its rows); the batch's others commit."""
    first = manual.submit([_decision("old")])
    manual.commit()
    assert first == [(None, [])]

    good_a = manual.submit([_decision("a"), _learned("a")])
    dup_old = manual.submit([_decision("old"), RewardRow("exp", "old", 1.0, 2.0, False)])
    good_b = manual.submit([_decision("b")])
    dup_b = manual.submit([_decision("b", model_version="other")])
    same_id_elsewhere = manual.submit([_decision("b", experiment="other")])
    with capture_logs() as events:
        manual.commit()
    assert [e["jobs"] for e in events if e["event"] == "log_batch_failed"] == [5]  # one batch

    assert good_a == [(None, [LearnedRow("exp", "a", -1.0, 1_700_000_100.0, 1)])]
    assert good_b == [(None, [])] and same_id_elsewhere == [(None, [])]
    for failed in (dup_old, dup_b):
        ((error, learned),) = failed
        assert isinstance(error, DuplicateDecision) and learned == []
    assert manual.log.rewards("exp", "old") == []
    decision_b = manual.log.decision("exp", "b")
    assert decision_b is not None and decision_b.model_version == "v1"
    assert manual.log.decision("other", "b") is not None
    assert manual.log.is_learned("exp", "a")


def test_learned_rows_get_consecutive_seqs_across_batches_and_reopening(tmp_path: Path) -> None:
    """Learned seqs are consecutive across batches and reopening; failed jobs use none."""
    data = tmp_path / "data"
    manual = ManualLog(data)
    decisions = [_decision(f"e{i}") for i in range(8)]
    manual.submit(decisions)
    batch1 = manual.submit([_learned("e0"), _learned("e1"), _learned("e2")])
    manual.commit()
    batch2a = manual.submit([_learned("e3")])
    failing = manual.submit([_decision("e0"), _learned("e4")])  # duplicate decision
    batch2b = manual.submit([_learned("e5")])
    manual.commit()
    manual.log.close()

    reopened = ManualLog(data)
    batch3 = reopened.submit([_learned("e6"), _learned("e7")])
    reopened.commit()

    def seqs(results: list[Result]) -> list[int]:
        ((error, learned),) = results
        assert error is None
        return [row.seq for row in learned]

    assert seqs(batch1) == [1, 2, 3]
    assert seqs(batch2a) == [4] and seqs(batch2b) == [5]
    assert isinstance(failing[0][0], DuplicateDecision)
    assert seqs(batch3) == [6, 7]
    assert [(item.seq, item.event_id) for item in reopened.log.learn_items("exp", "")] == [
        (1, "e0"), (2, "e1"), (3, "e2"), (4, "e3"), (5, "e5"), (6, "e6"), (7, "e7"),
    ]  # fmt: skip
    assert reopened.log.learned_count("exp") == 7
    assert reopened.log.learned_count("exp", up_to_seq=4) == 4
    reopened.log.close()


def test_learn_batch_returns_items_in_the_given_order(manual: ManualLog) -> None:
    """learn_batch returns one item per row in the rows' order, with label and seq."""
    decisions = [
        _decision("x", ranking=(12, 3, 0), probabilities=(0.5, 0.25, 0.25)),  # two digits
        _decision("y", ranking=(0,), probabilities=(1.0,)),
        _decision("z", ranking=(1, 0), probabilities=(0.9000000000000001, 0.09999999999999998)),
    ]
    manual.submit(decisions)
    manual.commit()
    rows = [
        LearnedRow("exp", "z", -2.0, 0.0, 7),
        LearnedRow("exp", "x", 0.5, 0.0, 8),
        LearnedRow("exp", "y", -0.0, 0.0, 9),
    ]
    items = manual.log.learn_batch("exp", rows)
    assert [(i.seq, i.event_id, i.chosen_index, i.probability, i.cost) for i in items] == [
        (7, "z", 1, 0.9000000000000001, -2.0),
        (8, "x", 12, 0.5, 0.5),
        (9, "y", 0, 1.0, -0.0),
    ]
    assert all(item.c_json == decisions[0].c_json for item in items)
    with pytest.raises(LookupError, match="exp/nope"):
        manual.log.learn_batch("exp", [LearnedRow("exp", "nope", 0.0, 0.0, 1)])


def test_learn_batch_handles_more_rows_than_one_query_binds(manual: ManualLog) -> None:
    """More rows than one query could bind one by one come back complete and in order."""
    manual.submit([_decision(f"e{i}", ranking=(i % 3, 0)) for i in range(1203)])
    manual.commit()
    rows = [LearnedRow("exp", f"e{i}", float(i), 0.0, i + 1) for i in reversed(range(1203))]
    items = manual.log.learn_batch("exp", rows)
    assert [item.event_id for item in items] == [row.event_id for row in rows]
    assert [item.chosen_index for item in items] == [int(r.event_id[1:]) % 3 for r in rows]


def test_export_rows_lists_learned_in_learned_order_then_the_rest(manual: ManualLog) -> None:
    """export_rows lists learned decisions in learned order, then the rest in decision order."""
    manual.submit([_decision(f"d{i}") for i in range(1, 6)])
    manual.submit([_decision("d1", experiment="other"), _learned("d1", experiment="other")])
    manual.submit([_learned("d4", -4.0), ActivationRow("exp", "d3", 5.0, False)])
    manual.submit([_learned("d2", -2.0)])
    manual.commit()
    exported = [
        (row.event_id, cost, seq, activated)
        for row, cost, seq, activated in manual.log.export_rows("exp")
    ]
    assert exported == [
        ("d4", -4.0, 2, True),
        ("d2", -2.0, 3, True),
        ("d1", None, None, False),
        ("d3", None, None, True),
        ("d5", None, None, False),
    ]


def test_skipping_on_request_forgets_the_breaks_found_after_the_first_skipped_row(
    manual: ManualLog,
) -> None:
    """A skipped event may be what broke the events right after it: the marks of that run go
    (the replay finds again those that still break the model, one replay each); earlier ones,
    refusals, and breaks past the run stay."""
    manual.submit([_decision(f"d{i}") for i in range(1, 6)] + [_decision("o1", "other")])
    manual.submit([_learned(f"d{i}") for i in range(1, 4)] + [_learned("o1", experiment="other")])
    manual.submit([_learned("d4"), _learned("d5")])
    manual.commit()
    # seqs: d1 1, d2 2, d3 3, o1 4, d4 5, d5 6
    manual.log.mark_unlearnable("exp", "--a", 1, "d1", "broke it", True, 1.0)
    manual.log.mark_unlearnable("exp", "--a", 3, "d3", "broke it", True, 1.0)
    manual.log.mark_unlearnable("exp", "--a", 5, "d4", "too big", False, 1.0)
    manual.log.mark_unlearnable("exp", "--a", 6, "d5", "broke it", True, 1.0)
    manual.log.mark_unlearnable("exp", "--b", 3, "d3", "broke it", True, 1.0)
    manual.log.mark_unlearnable("exp", "--b", 6, "d5", "broke it", True, 1.0)
    manual.log.mark_skipped("exp", [(2, "d2"), (99, "gone")], "skipped", 2.0, 2)
    assert [item.event_id for item in manual.log.learn_items("exp", "--a")] == ["d3"]
    # The skip, and the forgetting, hold under every vw_args (d3 under --b too).
    assert [item.event_id for item in manual.log.learn_items("exp", "--b")] == ["d1", "d3", "d4"]
    assert manual.log.unlearnable_count("exp", "--a") == 4  # d1, d2, d4, d5
    assert manual.log.unlearnable_count("exp", "--b") == 2  # d2, d5
    batch = manual.log.learn_batch("exp", [_learned_row("d2", 2), _learned_row("d3", 3)], "--b")
    assert [item.event_id for item in batch] == ["d3"]


def test_learned_seqs_finds_the_experiments_learned_events(manual: ManualLog) -> None:
    manual.submit([_decision(f"d{i}") for i in range(1, 5)] + [_decision("o1", "other")])
    manual.submit([_learned("d1"), _learned("d2"), _learned("o1", experiment="other")])
    manual.submit([_learned("d3")])
    manual.commit()
    ids = ["d3", "d4", "o1", "d1", "nope"]
    assert manual.log.learned_seqs("exp", ids) == {"d1": 1, "d3": 4}
    many = [f"x{i}" for i in range(1200)] + ["d2"]  # past one query's bound parameters
    assert manual.log.learned_seqs("exp", many) == {"d2": 2}


def test_rows_marked_unlearnable_are_left_out_under_those_vw_args_only(
    manual: ManualLog,
) -> None:
    """The model skips them under the args they broke; replay and export skip them too, other
    args still learn them, and deleting the experiment deletes the marks."""
    manual.log.execute_admin(
        "INSERT INTO experiments VALUES ('exp', ?, 'epoch', 0, 0)", ('{"vw_args": "--a"}',)
    )
    manual.submit([_decision(f"d{i}") for i in range(1, 4)])
    manual.submit([_learned("d1"), _learned("d2"), _learned("d3")])
    manual.commit()
    manual.log.mark_unlearnable("exp", "--a", 2, "d2", "it broke the model", True, 5.0)
    manual.log.mark_unlearnable("exp", "--a", 2, "d2", "found again on a replay", True, 6.0)
    manual.log.mark_unlearnable("exp", "--a", 9, "gone", "deleted meanwhile", True, 7.0)
    assert [item.event_id for item in manual.log.learn_items("exp", "--a")] == ["d1", "d3"]
    assert [item.event_id for item in manual.log.learn_items("exp", "--b")] == ["d1", "d2", "d3"]
    assert manual.log.unlearnable_count("exp", "--a") == 1
    assert manual.log.unlearnable_count("exp", "--b") == 0
    # The rows just before seq 3: d2 (marked as breaking the model), then d1 (learned).
    assert manual.log.follows_broken_rows("exp", "--a", 3, 1)
    assert not manual.log.follows_broken_rows("exp", "--a", 3, 2)
    assert not manual.log.follows_broken_rows("exp", "--b", 3, 1)
    assert not manual.log.follows_broken_rows("exp", "--a", 2, 2)  # only one row before
    exported = [(row.event_id, cost) for row, cost, _, _ in manual.log.export_rows("exp")]
    assert exported == [("d1", -1.0), ("d3", -1.0), ("d2", None)]
    manual.submit([DeleteExperimentRow("exp")])
    manual.commit()
    assert manual.log.unlearnable_count("exp", "--a") == 0


def test_export_rows_reads_one_snapshot_while_the_server_learns_on(manual: ManualLog) -> None:
    """An event learned while export runs appears once, as export's snapshot has it (before,
    one learned between export's two queries was in neither). Found by an audit."""
    manual.submit([_decision("d1"), _decision("d2"), _learned("d1")])
    manual.commit()
    rows = manual.log.export_rows("exp")
    first = next(rows)
    manual.submit([_learned("d2")])  # the live server learns d2 meanwhile
    manual.commit()
    exported = [(row.event_id, cost) for row, cost, _, _ in (first, *rows)]
    assert exported == [("d1", -1.0), ("d2", None)]
    assert [row.event_id for row, *_ in manual.log.export_rows("exp")] == ["d1", "d2"]


def test_threaded_writer_runs_callbacks_on_its_thread_and_isolates_a_duplicate(
    tmp_path: Path,
) -> None:
    """The writer thread runs callbacks; a duplicate in its batch fails only its own job."""
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL")
    blocked, release = threading.Event(), threading.Event()
    results: dict[str, tuple[str, BaseException | None]] = {}

    def done(name: str) -> Callable[[BaseException | None, list[LearnedRow]], None]:
        def record(error: BaseException | None, learned: list[LearnedRow]) -> None:
            results[name] = (threading.current_thread().name, error)
            if name == "blocker":  # hold the writer until the batch below is queued
                blocked.set()
                release.wait(timeout=30)

        return record

    try:
        with capture_logs() as events:
            log.submit([_decision("old")], done("blocker"))
            assert blocked.wait(timeout=30)
            log.submit([_decision("a")], done("a"))
            log.submit([_decision("old")], done("dup"))
            log.submit([_decision("b")], done("b"))
            release.set()
            log.flush_and_stop_writing()  # joins the writer: every callback has run
        assert log.decision("exp", "a") is not None and log.decision("exp", "b") is not None
        with pytest.raises(RuntimeError, match="closed"):
            log.submit([_decision("c")], done("c"))
    finally:
        release.set()
        log.close()

    assert {name: thread for name, (thread, _) in results.items()} == dict.fromkeys(
        ("blocker", "a", "dup", "b"), "log-writer"
    )
    assert results["a"][1] is None and results["b"][1] is None
    assert isinstance(results["dup"][1], DuplicateDecision)
    failed_batches = [e for e in events if e["event"] == "log_batch_failed"]
    assert [e["jobs"] for e in failed_batches] == [3]  # a, dup and b shared one transaction
    # A repeated event id is how Rank is retried: noted, not warned about.
    assert [(e["log_level"], e["repeated_id"]) for e in failed_batches] == [("info", True)]


def test_a_small_submit_is_committed_on_the_callers_thread_only_when_nothing_waits(
    tmp_path: Path,
) -> None:
    """With `here`, a small submit that finds the writer thread idle commits before submit
    returns, on the caller's thread; while the writer thread still holds an earlier job, when
    `here` says others wait, or for a large batch or a deletion, it goes to the writer thread,
    and the jobs commit in the order they were submitted."""
    nothing_waits = [True]
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL", here=lambda: nothing_waits[0])
    order: list[tuple[str, str, BaseException | None]] = []
    blocked, release = threading.Event(), threading.Event()

    def done(name: str) -> Callable[[BaseException | None, list[LearnedRow]], None]:
        def record(error: BaseException | None, learned: list[LearnedRow]) -> None:
            order.append((name, threading.current_thread().name, error))
            if name == "blocker":
                blocked.set()
                release.wait(timeout=30)

        return record

    caller = threading.current_thread().name
    try:
        assert log.submit([_decision("here")], done("here")) is True
        assert order == [("here", caller, None)]
        assert log.decision("exp", "here") is not None

        nothing_waits[0] = False  # another request waits on this thread: hand over
        assert log.submit([_decision("busy")], done("blocker")) is False
        assert blocked.wait(timeout=30)
        nothing_waits[0] = True
        # The writer thread still holds "blocker": these queue behind it, in order.
        assert log.submit([_decision("after")], done("after")) is False
        assert log.submit([_decision("here")], done("dup")) is False
        release.set()
        log.flush_and_stop_writing()
    finally:
        release.set()
        log.close()
    assert [(name, thread) for name, thread, _ in order] == [
        ("here", caller),
        ("blocker", "log-writer"),
        ("after", "log-writer"),
        ("dup", "log-writer"),
    ]
    assert isinstance(order[-1][2], DuplicateDecision)


def test_a_submit_that_would_wait_for_another_connections_lock_goes_to_the_writer_thread(
    tmp_path: Path,
) -> None:
    """Waiting for SQLite's write lock on the caller's thread (the event loop) would stop it,
    up to the busy timeout: the writer thread waits instead, and commits once the lock is free.
    A duplicate committed on the caller's thread fails alone, as on the writer thread."""
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL", here=lambda: True)
    other = sqlite3.connect(log.path, isolation_level=None)
    results: list[tuple[str, str, BaseException | None]] = []

    def done(name: str) -> Callable[[BaseException | None, list[LearnedRow]], None]:
        def record(error: BaseException | None, learned: list[LearnedRow]) -> None:
            results.append((name, threading.current_thread().name, error))

        return record

    caller = threading.current_thread().name
    try:
        assert log.submit([_decision("first")], done("first")) is True
        assert log.submit([_decision("first")], done("dup")) is True
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        assert log.submit([_decision("locked")], done("locked")) is False
        assert log.submit([_decision("behind")], done("behind")) is False
        assert [name for name, _, _ in results] == ["first", "dup"]
        other.execute("COMMIT")
        log.flush_and_stop_writing()
        assert log.decision("exp", "locked") is not None
    finally:
        other.close()
        log.close()
    assert [(name, thread) for name, thread, _ in results] == [
        ("first", caller),
        ("dup", caller),
        ("locked", "log-writer"),
        ("behind", "log-writer"),
    ]
    assert isinstance(results[1][2], DuplicateDecision)
    assert [error for name, _, error in results if name != "dup"] == [None, None, None]


def test_a_commit_failing_on_the_callers_thread_fails_its_job_there(tmp_path: Path) -> None:
    """A full disk on the caller's thread fails the job at once (no second try on the writer
    thread: one job, one transaction) and writes nothing; the next submit commits."""
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL", here=lambda: True)
    writer = log._writer
    real = writer._transaction

    def full(batch: object) -> bool:
        writer.last_error = sqlite3.OperationalError("database or disk is full")
        return False

    errors: list[BaseException | None] = []
    try:
        writer._transaction = full  # type: ignore[method-assign]
        with capture_logs() as events:
            assert log.submit([_decision("e1")], lambda error, _: errors.append(error)) is True
        assert [(e["event"], e["log_level"]) for e in events] == [("log_batch_failed", "warning")]
        writer._transaction = real  # type: ignore[method-assign]
        assert log.submit([_decision("e2")], lambda error, _: errors.append(error)) is True
        assert log.decision("exp", "e1") is None and log.decision("exp", "e2") is not None
    finally:
        log.close()
    assert [str(error) for error in errors] == ["database or disk is full", "None"]


@pytest.mark.parametrize("big", ["many rows", "a deletion"])
def test_a_big_or_deleting_submit_goes_to_the_writer_thread(tmp_path: Path, big: str) -> None:
    """A window-closing batch or a deletion would hold the caller's thread for long."""
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL", here=lambda: True)
    threads: list[str] = []
    rows: list[Row] = (
        [_decision(f"e{i}") for i in range(MAX_HERE_ROWS + 1)]
        if big == "many rows"
        else [DeleteExperimentRow("exp")]
    )
    try:
        handed = log.submit(
            rows, lambda error, learned: threads.append(threading.current_thread().name)
        )
        assert handed is False
        log.flush_and_stop_writing()
    finally:
        log.close()
    assert threads == ["log-writer"]


def test_older_logs_are_upgraded_and_a_newer_one_refused(tmp_path: Path) -> None:
    """Version 2 added the unlearnable table, version 3 marks for every vw_args: a log must not
    be opened by a server that would learn the events it marks, and older logs are upgraded
    (a version-1 log gains the table)."""
    SQLiteDecisionLog(tmp_path, "NORMAL").close()
    path = str(tmp_path / "decisions.sqlite3")
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE unlearnable")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    log = SQLiteDecisionLog(tmp_path, "NORMAL")
    assert log.unlearnable_count("exp", "--a") == 0
    log.close()
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT value FROM meta").fetchone() == ("3",)
        indexes = {row[1] for row in con.execute("PRAGMA index_list(unlearnable)")}
        assert "unlearnable_experiment" in indexes
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        # A version-2 server wrote skips on request under the vw_args of the time.
        con.executemany(
            "INSERT INTO unlearnable VALUES (?, ?, 'exp', 'e', ?, 0, 0)",
            [(1, "--a", SKIPPED_ON_REQUEST), (1, "--b", SKIPPED_ON_REQUEST), (2, "--a", "nan")],
        )
    SQLiteDecisionLog(tmp_path, "NORMAL").close()  # version 3 adds no table
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT value FROM meta").fetchone() == ("3",)
        marks = con.execute("SELECT seq, vw_args FROM unlearnable ORDER BY seq").fetchall()
        assert marks == [(1, ANY_ARGS), (2, "--a")]
        con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="schema version 4"):
        SQLiteDecisionLog(tmp_path, "NORMAL")


def test_export_reads_a_log_without_changing_it(tmp_path: Path) -> None:
    """Export opens the log read-only: before, it opened it as the server does, so exporting a
    version-1 log beside an older server upgraded it, and that server then refused to
    restart (found by review). Marks of a version-2 log still apply."""
    log = SQLiteDecisionLog(tmp_path, "NORMAL")
    config = ExperimentConfig("exp", "--cb_explore_adf", 10.0, 0.0)
    log.execute_admin(
        "INSERT INTO experiments (name, config, epoch, created_at, updated_at)"
        " VALUES (?, ?, 'e', 0, 0)",
        (config.name, json.dumps(config.to_json_dict())),
    )
    committed = threading.Event()
    for event_id in ("a", "b"):
        log.submit(
            [_decision(event_id), LearnedRow("exp", event_id, -1.0, 1.0)],
            lambda error, rows: committed.set(),
        )
    log.flush_and_stop_writing()
    log.mark_unlearnable("exp", "--cb_explore_adf", 2, "b", "too big", False, 1.0)
    log.close()
    path = tmp_path / "decisions.sqlite3"

    lines = [json.loads(line) for line in iter_dsjson(tmp_path, "exp")]
    assert [(line["EventId"], "_skipLearn" in line) for line in lines] == [
        ("a", False),
        ("b", True),
    ]
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE unlearnable")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    before = path.read_bytes()
    lines = [json.loads(line) for line in iter_dsjson(tmp_path, "exp")]
    assert [(line["EventId"], "_skipLearn" in line) for line in lines] == [
        ("a", False),
        ("b", False),
    ]
    assert path.read_bytes() == before
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT value FROM meta").fetchone() == ("1",)
        con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    with pytest.raises(InvalidArgument, match=r"data_dir.*schema version 4"):
        list(iter_dsjson(tmp_path, "exp"))
    with sqlite3.connect(path) as con:
        con.execute("UPDATE meta SET value = 'x' WHERE key = 'schema_version'")
    with pytest.raises(InvalidArgument, match=r"data_dir.*schema version x"):
        list(iter_dsjson(tmp_path, "exp"))
    path.write_bytes(b"not a database at all, but long enough to be read as a header" * 2)
    with pytest.raises(InvalidArgument, match=r"data_dir.*cannot be read as a decision log"):
        list(iter_dsjson(tmp_path, "exp"))


def test_the_wal_starts_over_under_steady_writes(tmp_path: Path) -> None:
    """Writes that never pause left every PASSIVE checkpoint a few frames short, and a write
    starts the WAL over only after a complete one: it grew for as long as they lasted (~8 MB
    a second under load, measured). Past WAL_RESTART_FRAMES a FULL checkpoint completes it."""
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL")
    wal = tmp_path / "data" / "decisions.sqlite3-wal"
    commits = 6 * WAL_RESTART_FRAMES // 3  # a one-row commit writes ~3 frames (table, 2 indexes)
    done = threading.Event()

    def write() -> None:
        committed = threading.Semaphore(0)
        for i in range(commits):
            log.submit([_decision(f"d{i}")], lambda error, rows: committed.release())
            committed.acquire()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    largest = 0
    try:
        while not done.is_set():
            log.checkpoint_wal()
            largest = max(largest, wal.stat().st_size)
    finally:
        writer.join()
        log.close()
    assert largest < 3 * WAL_RESTART_FRAMES * 4120  # ~4 KB pages, 24-byte frame headers


def test_a_reader_holding_an_old_view_does_not_make_the_checkpoint_hold_writers_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export or a rebuild's replay reads one view for minutes; a FULL checkpoint would take
    the write lock, wait for that reader, and give up, each second (found by review). The WAL
    starts over once the reader is done."""
    monkeypatch.setattr(sqlite_log, "WAL_RESTART_FRAMES", 30)
    log = SQLiteDecisionLog(tmp_path / "data", synchronous="NORMAL")
    committed = threading.Semaphore(0)

    def commit(prefix: str, n: int) -> None:
        for i in range(n):
            log.submit([_decision(f"{prefix}{i}")], lambda error, rows: committed.release())
            committed.acquire()

    try:
        commit("a", 5)
        reader = sqlite3.connect(tmp_path / "data" / "decisions.sqlite3", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM decisions").fetchone()  # holds this view
        commit("b", 20)
        with capture_logs() as logs:
            assert log.checkpoint_wal() >= 30
        assert logs == []  # FULL was not tried: it would have waited, then given up
        reader.execute("COMMIT")
        reader.close()
        assert log.checkpoint_wal() >= 30  # PASSIVE copies all, then FULL
        commit("c", 1)  # starts the WAL over
        assert log.checkpoint_wal() < 30
        timeout_ms = log._reader().execute("PRAGMA busy_timeout").fetchone()[0]
        assert timeout_ms == BUSY_TIMEOUT_SECONDS * 1000
    finally:
        log.close()
