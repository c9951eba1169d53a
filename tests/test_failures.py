"""What a failed commit or a failed learn leaves behind: nothing half-done, nothing hung."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bandit_server.core.experiment import Aggregation
from bandit_server.engine.engine import Engine
from bandit_server.errors import Unavailable
from bandit_server.storage.records import LearnItem
from tests.test_reward_windows import Clock, config, costs, rank, run


def fail_next_transactions(engine: Engine, count: int) -> None:
    """The log's next `count` transactions fail as on a full disk. A failed batch is retried
    job by job, so one request's commit takes two."""
    writer = engine.log._writer
    original = writer._transaction
    left = [count]

    def transaction(batch: object) -> bool:
        if left[0] > 0:
            left[0] -= 1
            writer.last_error = sqlite3.OperationalError("database or disk is full")
            return False
        return original(batch)  # type: ignore[arg-type]

    writer._transaction = transaction  # type: ignore[method-assign]


def test_a_reward_whose_commit_failed_counts_once_when_retried(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.SUM))
        await rank(engine, "e1")
        await engine.reward("w", "e1", 0.5)
        fail_next_transactions(engine, 2)
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
        fail_next_transactions(engine, 2)
        with pytest.raises(Unavailable):
            await engine.reward("w", "e1", 0.7)
        assert costs(engine) == {}
        await engine.reward("w", "e1", 0.7)
        assert costs(engine) == {"e1": -0.7}
        assert engine.model("w").learned_count == 1

    run(tmp_path, scenario)


def test_windows_whose_close_failed_stay_open_and_close_on_the_next_tick(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=0.25))
        await rank(engine, "e1")
        await rank(engine, "e2")
        await engine.reward("w", "e2", 1.0)
        clock.now += 11
        fail_next_transactions(engine, 2)
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
        learn = model.learn

        def failing_learn(item: LearnItem) -> bool:
            if item.event_id == "e1":
                raise RuntimeError("VW rejected the example")
            return learn(item)

        model.learn = failing_learn  # type: ignore[method-assign]
        for event_id in ("e1", "e2"):
            await rank(engine, event_id)
            await asyncio.wait_for(engine.reward("w", event_id, 1.0), timeout=20)
        assert model.stalled
        assert model.learned_count == 0  # e2 was not learned past the failed e1

    run(tmp_path, scenario)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        assert engine.model("w").learned_count == 2

    run(tmp_path, after_restart)


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
