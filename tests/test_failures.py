"""What a failed commit or a failed learn leaves behind: nothing half-done, nothing hung."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.core.types import Feature, Namespace, RankInput, RankResult
from bandit_server.engine.engine import Engine
from bandit_server.engine.model import ExperimentModel
from bandit_server.errors import AlreadyExists, NotFound, Unavailable
from bandit_server.storage.records import LearnItem
from bandit_server.storage.sqlite_writer import _Batch
from tests.test_reward_windows import ACTIONS, Clock, config, costs, rank, run


def fail_transactions(
    engine: Engine, matches: Callable[[_Batch], bool], count: float = math.inf
) -> Callable[[], None]:
    """The log's next `count` transactions for which `matches` holds fail as on a full disk;
    the others go through untouched. Returns what puts the log back as it was. Every commit
    goes to the writer thread, so the count below is exact (see fail_commits)."""
    writer = engine.log._writer
    writer._here = None
    original = writer._transaction
    left = [count]

    def transaction(batch: _Batch) -> bool:
        if left[0] > 0 and matches(batch):
            left[0] -= 1
            writer.last_error = sqlite3.OperationalError("database or disk is full")
            return False
        return original(batch)

    writer._transaction = transaction  # type: ignore[method-assign]
    return lambda: setattr(writer, "_transaction", original)


def fail_commits(engine: Engine, *values: object, count: int = 2) -> None:
    """Fail the next `count` transactions holding a row with all of `values` (an event id, a
    reward value). A failed batch is retried job by job, so one request takes two. Other
    commits (the background watermark saves) go through."""

    def matches(batch: _Batch) -> bool:
        tables = (batch.decisions, batch.rewards, batch.activations, batch.learned)
        return any(all(v in row for v in values) for rows in tables for row in rows)

    fail_transactions(engine, matches, count)


def fail_deletes(engine: Engine) -> Callable[[], None]:
    return fail_transactions(engine, lambda batch: bool(batch.deletes))


def fail_learning(model: ExperimentModel, event_id: str) -> None:
    """VW rejects `event_id` when `model` learns it."""
    learn = model.learn

    def failing_learn(item: LearnItem) -> bool:
        if item.event_id == event_id:
            raise RuntimeError("VW rejected the example")
        return learn(item)

    model.learn = failing_learn  # type: ignore[method-assign]


def test_a_reward_whose_commit_failed_counts_once_when_retried(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.SUM))
        await rank(engine, "e1")
        await engine.reward("w", "e1", 0.5)
        fail_commits(engine, "e1", 1.0)
        with pytest.raises(Unavailable, match="disk is full"):
            await engine.reward("w", "e1", 1.0)
        await engine.reward("w", "e1", 1.0)  # the client retries
        clock.now += 11
        await engine.close_due_windows()
        assert costs(engine) == {"e1": -1.5}

    run(tmp_path, scenario)


def test_an_earliest_reward_whose_commit_failed_is_learned_when_retried(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        await rank(engine, "e1")
        fail_commits(engine, "e1", 0.7)
        with pytest.raises(Unavailable):
            await engine.reward("w", "e1", 0.7)
        assert costs(engine) == {}
        await engine.reward("w", "e1", 0.7)
        assert costs(engine) == {"e1": -0.7}
        assert engine.model("w").learned_count == 1

    run(tmp_path, scenario)


def test_a_failed_reward_does_not_take_a_later_committed_one_with_it(tmp_path: Path) -> None:
    """Two rewards for one event at once, the first one's commit fails: the second is the
    earliest reward that was logged, so it is the one learned."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        await rank(engine, "e1")
        fail_commits(engine, "e1", 0.3)
        first, second = await asyncio.gather(
            engine.reward("w", "e1", 0.3), engine.reward("w", "e1", 0.9), return_exceptions=True
        )
        assert isinstance(first, Unavailable)
        assert second is False
        assert costs(engine) == {"e1": -0.9}

    run(tmp_path, scenario)


def test_a_window_does_not_close_under_a_reward_whose_commit_is_in_flight(
    tmp_path: Path,
) -> None:
    """The close waits for the in-flight reward's commit; when that fails, the window closes
    with the default reward instead of with a reward that was never logged."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.SUM, default_reward=0.25))
        await rank(engine, "e1")
        fail_commits(engine, "e1", 0.8)
        reward = asyncio.ensure_future(engine.reward("w", "e1", 0.8))
        await asyncio.sleep(0)  # the reward is applied and its commit queued
        clock.now += 11
        assert await engine.close_due_windows() == 0
        with pytest.raises(Unavailable):
            await reward
        await engine.close_due_windows()  # (unless the background tick already closed it)
        assert costs(engine) == {"e1": -0.25}

    run(tmp_path, scenario)


def test_windows_whose_close_failed_stay_open_and_close_on_the_next_tick(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=0.25))
        await rank(engine, "e1")
        await rank(engine, "e2")
        await engine.reward("w", "e2", 1.0)
        clock.now += 11
        fail_commits(engine, "e1")
        with pytest.raises(Unavailable):
            await engine.close_due_windows()
        assert costs(engine) == {"e2": -1.0}
        assert await engine.close_due_windows() == 2
        assert costs(engine) == {"e2": -1.0, "e1": -0.25}

    run(tmp_path, scenario)


def test_an_event_that_fails_to_learn_stalls_learning_without_hanging_calls(
    tmp_path: Path,
) -> None:
    """Learning on past a failed event would lose it for good (a checkpoint would cover it),
    so the model stops there, calls waiting for learning still return, and a restart replays."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        model = engine.model("w")
        fail_learning(model, "e1")
        for event_id in ("e1", "e2"):
            await rank(engine, event_id)
            await asyncio.wait_for(engine.reward("w", event_id, 1.0), timeout=20)
        assert model.stalled and engine.get_experiment("w").learning_stalled
        assert model.learned_count == 0  # e2 was not learned past the failed e1

    run(tmp_path, scenario)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        assert engine.model("w").learned_count == 2

    run(tmp_path, after_restart)


def test_a_server_whose_log_holds_an_event_vw_rejects_still_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        for event_id in ("e1", "e2", "e3"):
            await rank(engine, event_id)
            await engine.reward("w", event_id, 1.0)

    run(tmp_path, scenario)
    learn = ExperimentModel.learn

    def failing_learn(self: ExperimentModel, item: LearnItem) -> bool:
        if item.event_id == "e2":
            raise RuntimeError("VW rejected the example")
        return learn(self, item)

    monkeypatch.setattr(ExperimentModel, "learn", failing_learn)
    (tmp_path / "models").rename(tmp_path / "no-checkpoints")  # replay the whole log

    async def after_restart(engine: Engine, clock: Clock) -> None:
        model = engine.model("w")
        assert model.stalled and engine.get_experiment("w").learning_stalled
        assert model.learned_count == 1  # e1; stopped at e2, e3 not learned past it
        await rank(engine, "e4")  # and it serves

    run(tmp_path, after_restart)


def test_a_delete_whose_commit_failed_leaves_the_experiment_as_it_was(tmp_path: Path) -> None:
    """Traffic that commits beside the failed delete is not lost: the reward is learned and the
    windows still close, as after a restart."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=0.25))
        for event_id in ("e1", "e2"):
            await rank(engine, event_id)
        put_back = fail_deletes(engine)
        reward = asyncio.ensure_future(engine.reward("w", "e2", 0.5))
        await asyncio.sleep(0)  # queued just before the delete, likely in its batch
        with pytest.raises(Unavailable):
            await engine.delete_experiment("w")
        await reward
        put_back()
        assert engine.get_experiment("w").config.name == "w"
        clock.now += 11
        await engine.close_due_windows()
        await asyncio.to_thread(engine.learner.call, lambda: None)  # the learner has caught up
        assert costs(engine) == {"e2": -0.5, "e1": -0.25}
        assert engine.model("w").learned_count == 2
        await engine.delete_experiment("w")
        assert engine.list_experiments() == []

    run(tmp_path, scenario)


def test_an_outcome_waiting_on_its_event_does_not_outlive_a_delete(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.SUM))
        await rank(engine, "e1")
        first = asyncio.ensure_future(engine.reward("w", "e1", 0.5))
        second = asyncio.ensure_future(engine.reward("w", "e1", 0.6))
        await asyncio.sleep(0)  # the first is committing, the second waits for it
        await engine.delete_experiment("w")
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert results[0] is False
        assert isinstance(results[1], Unavailable)
        count = engine.log._reader().execute("SELECT COUNT(*) FROM rewards").fetchone()[0]
        assert count == 0  # the first was deleted with the experiment; the second never logged

    run(tmp_path, scenario)


def test_delete_removes_rows_still_queued_and_old_checkpoints_are_never_used(
    tmp_path: Path,
) -> None:
    """A Rank in flight when its experiment is deleted leaves no row behind, and a checkpoint
    of the deleted experiment (left by a crash, or written while deleting) is ignored by a
    re-created experiment of the same name."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        for i in range(5):
            await rank(engine, f"old{i}")
            await engine.reward("w", f"old{i}", 1.0)
        await asyncio.to_thread(engine.learner.call, engine.learner.checkpoint_all)
        stale = engine._store.latest("w", engine._runtimes["w"].epoch)
        assert stale is not None and stale.learned_count == 5

        in_flight = asyncio.ensure_future(rank(engine, "late"))
        await asyncio.sleep(0)  # the Rank has queued its row
        await engine.delete_experiment("w")
        await in_flight
        engine._store.save(stale)  # as if a crash had kept it

        await engine.create_experiment(config(Aggregation.EARLIEST))
        assert engine.log.decision("w", "late") is None
        assert engine.log.decision("w", "old0") is None

    run(tmp_path, scenario)

    # After a restart the learned log's seqs start again below the stale checkpoint's.
    async def after_restart(engine: Engine, clock: Clock) -> None:
        assert engine.model("w").learned_count == 0
        for i in range(2):
            await rank(engine, f"new{i}")
            await engine.reward("w", f"new{i}", 1.0)
        assert engine.model("w").learned_count == 2

    run(tmp_path, after_restart)

    async def after_second_restart(engine: Engine, clock: Clock) -> None:
        assert engine.model("w").learned_count == 2
        assert costs(engine) == {"new0": -1.0, "new1": -1.0}

    run(tmp_path, after_second_restart)


def test_an_event_below_the_close_watermark_is_still_reopened_after_a_restart(
    tmp_path: Path,
) -> None:
    """If the clock steps back (or a commit outlasts its window), a new event's deadline can
    fall at or below the windows already closed; a restart must still reopen it."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=0.25))
        start = clock.now
        await rank(engine, "e1")
        clock.now += 15
        await engine.close_due_windows()
        clock.now = start  # stepped back
        await rank(engine, "e2")  # deadline == e1's, at the watermark
        await engine._save_watermarks()

    run(tmp_path, scenario)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        assert set(engine._runtimes["w"].open) == {"e2"}
        clock.now += 15
        await engine.close_due_windows()
        assert costs(engine) == {"e1": -0.25, "e2": -0.25}

    run(tmp_path, after_restart)


def test_a_policy_change_whose_caller_went_away_still_completes_consistently(
    tmp_path: Path,
) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        for i in range(5):
            await rank(engine, f"e{i}")
            await engine.reward("w", f"e{i}", 1.0)
        new = ExperimentConfig("w", "--cb_explore_adf --squarecb", 10.0, 0.0,
                               Aggregation.EARLIEST, 0.0)  # fmt: skip
        update = asyncio.ensure_future(engine.update_experiment(new))
        await asyncio.sleep(0.01)
        update.cancel()  # the client went away mid-rebuild
        await asyncio.gather(*engine._background)
        assert engine._models["w"] is engine.model("w")
        assert engine.get_experiment("w").config.vw_args == "--cb_explore_adf --squarecb"
        assert engine.model("w").learned_count == 5
        await rank(engine, "e5")
        await engine.reward("w", "e5", 1.0)
        assert engine.model("w").learned_count == 6

    run(tmp_path, scenario)


async def _update_then_delete(engine: Engine, new: ExperimentConfig) -> asyncio.Future[Any]:
    """Create experiment w, start updating it to `new`, and delete it before that is through."""
    await engine.create_experiment(config(Aggregation.EARLIEST))
    update = asyncio.ensure_future(engine.update_experiment(new))
    await asyncio.sleep(0)
    await engine.delete_experiment("w")
    return update


def test_a_policy_change_racing_a_delete_leaves_nothing_behind(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        new = ExperimentConfig("w", "--cb_explore_adf --squarecb", 10.0, 0.0,
                               Aggregation.EARLIEST, 0.0)  # fmt: skip
        update = await _update_then_delete(engine, new)
        await asyncio.gather(update, return_exceptions=True)
        await asyncio.gather(*engine._background, return_exceptions=True)
        assert "w" not in engine._models
        assert engine.list_experiments() == []
        assert not (tmp_path / "models" / "w").exists()

    run(tmp_path, scenario)


def test_a_failed_delete_that_cannot_reread_the_log_keeps_serving_a_stalled_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))

        def unreadable() -> list[object]:
            raise sqlite3.OperationalError("disk I/O error")

        fail_deletes(engine)
        monkeypatch.setattr(engine.log, "experiments", unreadable)
        with pytest.raises(Unavailable):
            await engine.delete_experiment("w")
        status = engine.get_experiment("w")
        assert status.learning_stalled
        assert engine._models["w"] is engine.model("w")
        await rank(engine, "e1")  # still serves

    run(tmp_path, scenario)


def test_an_old_deadline_does_not_close_a_recreated_experiments_window(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=0.25))
        await rank(engine, "e1")
        await engine.delete_experiment("w")
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=0.25))
        clock.now += 5
        await rank(engine, "e1")  # the same client-chosen id, in the new experiment
        clock.now += 6  # past the old deadline, not the new one
        assert await engine.close_due_windows() == 0
        assert await engine.reward("w", "e1", 1.0) is False
        assert costs(engine) == {"e1": -1.0}

    run(tmp_path, scenario)


def test_concurrent_policy_changes_apply_one_after_the_other(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        changes = [
            ExperimentConfig("w", args, 10.0, 0.0, Aggregation.EARLIEST, 0.0)
            for args in ("--cb_explore_adf --squarecb", "--cb_explore_adf --epsilon 0.1")
        ]
        results = await asyncio.gather(*(engine.update_experiment(c) for c in changes))
        assert [r.config.vw_args for r in results] == [c.vw_args for c in changes]
        assert engine.get_experiment("w").config.vw_args == "--cb_explore_adf --epsilon 0.1"
        assert engine._models["w"] is engine.model("w")

    run(tmp_path, scenario)


def test_the_watermark_stays_below_decisions_still_committing(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        start = clock.now
        await rank(engine, "e1")
        clock.now += 15
        await engine.close_due_windows()
        engine._pending_deadlines[start + 5] = 1  # a Rank whose commit outlasted its window
        await engine._save_watermarks()
        assert engine.log.closed_until("w") < start + 5

    run(tmp_path, scenario)


def test_a_stalled_model_is_never_checkpointed(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        model = engine.model("w")
        fail_learning(model, "e1")
        for event_id in ("e0", "e1"):
            await rank(engine, event_id)
            await engine.reward("w", event_id, 1.0)
        assert model.stalled and model.learned_count == 1
        await asyncio.to_thread(engine.learner.call, engine.learner.checkpoint_all)
        assert engine._store.latest("w", engine._runtimes["w"].epoch) is None

    run(tmp_path, scenario)


def test_a_row_that_cannot_be_stored_fails_its_call_and_the_log_goes_on(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        bad = RankInput("w", "e1", (), ACTIONS, user_id="\ud800")  # not encodable as UTF-8
        with pytest.raises(Unavailable):
            await engine.rank(bad)
        await rank(engine, "e2")
        assert engine.log.decision("w", "e2") is not None

    run(tmp_path, scenario)


def test_a_checkpoint_ahead_of_the_log_is_not_used(tmp_path: Path) -> None:
    """With synchronous=NORMAL a power cut can lose the log's last commits while a checkpoint
    (fsynced) keeps them: new events would then reuse its seqs and be skipped."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        for i in range(3):
            await rank(engine, f"e{i}")
            await engine.reward("w", f"e{i}", 1.0)

    run(tmp_path, scenario)
    with sqlite3.connect(tmp_path / "decisions.sqlite3") as db:
        db.execute("DELETE FROM learned WHERE event_id != 'e0'")  # as if lost with the WAL

    async def after_power_cut(engine: Engine, clock: Clock) -> None:
        # Dropped, not just skipped: it must not come back once new events reach its seq.
        assert engine._store.latest("w", engine._runtimes["w"].epoch) is None
        assert engine.model("w").learned_count == 1
        await rank(engine, "e3")
        await engine.reward("w", "e3", 1.0)
        assert engine.model("w").learned_count == 2

    run(tmp_path, after_power_cut)


def test_an_update_retried_after_its_caller_went_away_waits_for_the_first(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        for i in range(5):
            await rank(engine, f"e{i}")
            await engine.reward("w", f"e{i}", 1.0)
        change = ExperimentConfig("w", "--cb_explore_adf --squarecb", 10.0, 0.0,
                                  Aggregation.EARLIEST, 0.0)  # fmt: skip
        first = asyncio.ensure_future(engine.update_experiment(change))
        await asyncio.sleep(0.01)
        first.cancel()  # the client's deadline passed mid-retrain; it retries with a tweak
        retry = ExperimentConfig("w", "--cb_explore_adf --squarecb", 10.0, 0.0,
                                 Aggregation.EARLIEST, 2.0)  # fmt: skip
        status = await engine.update_experiment(retry)
        assert status.config == retry
        await asyncio.gather(*engine._background)
        assert engine.get_experiment("w").config == retry
        assert engine._models["w"] is engine.model("w")

    run(tmp_path, scenario)


def test_two_decisions_sharing_a_deadline_keep_the_watermark_down_until_both_settle(
    tmp_path: Path,
) -> None:
    """Deadlines still committing are counted: when one of two decisions with the same deadline
    has settled, the other still holds it (and so the close watermark below it)."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        deadline = clock.now + 10
        writer = engine.log._writer
        writer._here = None  # hold the transactions on the writer thread, not on this loop
        original = writer._transaction
        started = {event: threading.Event() for event in ("e1", "e2")}
        release = {event: threading.Event() for event in ("e1", "e2")}

        def transaction(batch: _Batch) -> bool:  # runs on the writer thread
            for event in started:
                if any(event in row for row in batch.decisions):
                    started[event].set()
                    release[event].wait(10)
            return original(batch)

        writer._transaction = transaction  # type: ignore[method-assign]

        async def until(condition: Callable[[], bool]) -> None:
            for _ in range(10_000):  # a bound, not a timing assumption: fail instead of hang
                if condition():
                    return
                await asyncio.sleep(0.001)
            raise AssertionError("the condition never held")

        first = asyncio.create_task(rank(engine, "e1"))
        await until(started["e1"].is_set)  # e1's transaction is on the writer, held
        second = asyncio.create_task(rank(engine, "e2"))
        await until(lambda: engine._pending_deadlines.get(deadline) == 2)
        release["e1"].set()
        await first
        await until(started["e2"].is_set)
        # Still counted, so the watermark stays below it (see the test above) until e2 settles.
        assert engine._pending_deadlines == {deadline: 1}
        release["e2"].set()
        await second
        assert engine._pending_deadlines == {}

    run(tmp_path, scenario)


def test_a_policy_change_adding_interactions_skips_a_logged_value_too_large_for_them(
    tmp_path: Path,
) -> None:
    """A value fine without interactions (2e19 < 1e30) is past what -q allows (1e15). Retraining
    on it under -q would reach VW (under --synthcover it never returns, hanging the learner and
    the server); instead the model skips that event, says so, and learns on. Back without -q,
    the event is learnable again and is learned."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        plain = ExperimentConfig("w", "--cb_explore_adf --squarecb", 10.0, 0.0)
        await engine.create_experiment(plain)
        big = (Namespace("User", (Feature("x", 2e19),)),)
        await engine.rank(RankInput("w", "e1", big, ACTIONS))
        await engine.reward("w", "e1", 1.0)
        assert engine.get_experiment("w").learned_events == 1
        interacted = ExperimentConfig("w", "--cb_explore_adf --squarecb -q ::", 10.0, 0.0)
        status = await engine.update_experiment(interacted)
        assert (status.learned_events, status.unlearnable_events) == (0, 1)
        assert not status.learning_stalled
        await rank(engine, "e2")
        await engine.reward("w", "e2", 1.0)
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (1, 1)
        status = await engine.update_experiment(plain)
        assert (status.learned_events, status.unlearnable_events) == (2, 0)

    run(tmp_path, scenario)


def test_two_creates_of_one_name_at_once_give_already_exists(tmp_path: Path) -> None:
    """Both pass the first name check before vw_args is tried in a child process; the second
    must still get ALREADY_EXISTS, not an IntegrityError (INTERNAL). Found by an audit."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        results = await asyncio.gather(
            engine.create_experiment(config(Aggregation.EARLIEST)),
            engine.create_experiment(config(Aggregation.EARLIEST)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, AlreadyExists) for r in results) == 1
        assert [s.config.name for s in engine.list_experiments()] == ["w"]

    run(tmp_path, scenario)


def test_a_repeated_rank_racing_a_delete_is_not_found_not_internal(tmp_path: Path) -> None:
    """The repeat fails the UNIQUE check, then the delete removes the original before the
    repeat reads it back: NOT_FOUND (before, an AssertionError: INTERNAL). Found by an audit."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        await rank(engine, "e1")
        _delay_settles(engine)  # so the delete commits in between
        repeat = asyncio.ensure_future(engine.rank(RankInput("w", "e1", (), ACTIONS)))
        await asyncio.sleep(0)
        delete = asyncio.ensure_future(engine.delete_experiment("w"))
        result, _ = await asyncio.gather(repeat, delete, return_exceptions=True)
        assert isinstance(result, (NotFound, RankResult)), repr(result)

    run(tmp_path, scenario)


def _delay_settles(engine: Engine) -> None:
    """Commit callbacks reach the loop 50 ms after each batch, as on a busy loop. Every commit
    goes to the writer thread (none runs on the loop and settles at once)."""
    engine.log._writer._here = None
    drain, loop = engine._drain_settles, asyncio.get_running_loop()
    engine.log.on_batch_end(lambda: loop.call_soon_threadsafe(lambda: loop.call_later(0.05, drain)))


async def _reward_then_close(engine: Engine, clock: Clock, ranked: asyncio.Future[Any]) -> bool:
    """Reward e1 with 1.0 while `ranked` (its Rank) is under way, then close its window.
    Returns whether the reward was late."""
    late = await engine.reward("w", "e1", 1.0)
    await ranked
    clock.now += 20
    await engine.close_due_windows()
    return late


def test_a_reward_sent_with_its_rank_counts_even_before_the_rank_settles(tmp_path: Path) -> None:
    """The decision is committed but the loop has not yet opened its window when the Reward
    arrives: the Reward waits for it (before, it was logged in time yet never learned, and
    EARLIEST learned the default instead). Found by an audit."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=0.0))
        _delay_settles(engine)
        ranked = asyncio.ensure_future(engine.rank(RankInput("w", "e1", (), ACTIONS)))
        await asyncio.sleep(0.02)  # committed, not yet settled
        assert await _reward_then_close(engine, clock, ranked) is False
        assert costs(engine) == {"e1": -1.0}

    run(tmp_path, scenario)


def test_an_update_whose_experiment_was_recreated_meanwhile_does_not_touch_the_new_one(
    tmp_path: Path,
) -> None:
    """An update still validating its vw_args (~0.3 s) when its experiment is deleted and
    created again must not land on the new experiment. Found by review."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        changed = ExperimentConfig("w", "--cb_explore_adf --epsilon 0.3", 99.0, 0.0,
                                   Aggregation.SUM, 0.0)  # fmt: skip
        update = await _update_then_delete(engine, changed)
        await engine.create_experiment(config(Aggregation.EARLIEST))
        results = await asyncio.gather(update, return_exceptions=True)
        assert isinstance(results[0], NotFound), repr(results[0])
        assert engine.get_experiment("w").config == config(Aggregation.EARLIEST)

    run(tmp_path, scenario)


def test_a_reward_sent_right_behind_its_rank_waits_for_the_decision(tmp_path: Path) -> None:
    """A Reward that reaches the server while its Rank's decision is still being committed
    waits for it and counts, instead of answering NOT_FOUND for an event about to exist."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=0.0))
        engine.log._writer._here = None  # the commit goes to the writer thread and takes time
        ranked = asyncio.ensure_future(engine.rank(RankInput("w", "e1", (), ACTIONS)))
        await asyncio.sleep(0)  # the Rank has handed its decision to the writer, no more
        assert "e1" in engine._runtimes["w"].committing
        assert await _reward_then_close(engine, clock, ranked) is False
        assert costs(engine) == {"e1": -1.0}

    run(tmp_path, scenario)
