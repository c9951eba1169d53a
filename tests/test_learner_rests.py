"""The learner rests between slices of learning, so a Rank gets the GIL (VW holds it while it
learns) without waiting out the switch interval, but only while nothing waits on the learner
and few Ranks are in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bandit_server.core.experiment import ExperimentConfig
from bandit_server.engine import learner as learner_module
from bandit_server.engine.engine import Engine
from tests.test_rebuild_off_learner import OTHER_ARGS, _event, _handled, _rank
from tests.test_reward_windows import Clock, run


class CountingPacer:
    def __init__(self) -> None:
        self.rests = 0
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1

    def __call__(self) -> None:
        self.rests += 1


def _rests(tmp_path: Path, interval: float, ranks_in_flight: int = 0) -> CountingPacer:
    pacer = CountingPacer()

    async def scenario(engine: Engine, clock: Clock) -> None:
        engine.learner._pace = pacer  # type: ignore[assignment]
        engine.learner._ranks_in_flight = lambda: ranks_in_flight
        config = ExperimentConfig(
            "e", OTHER_ARGS, 10.0, 0.0, model_update_interval_seconds=interval
        )
        await engine.create_experiment(config)
        for i in range(3):
            await _event(engine, "e", f"n{i}", 0.1 * i, 1.0)  # learned at once (earliest)
        await _handled(engine, "e", 3)

    run(tmp_path, scenario)
    return pacer


def test_with_snapshots_the_learner_rests_after_each_slice(tmp_path: Path) -> None:
    pacer = _rests(tmp_path, interval=0.05)
    assert pacer.rests == 3
    assert pacer.restarts >= 1  # idle time before a batch is not counted as work


def test_at_interval_0_it_never_rests(tmp_path: Path) -> None:
    """Each Reward there waits until its event is learned."""
    assert _rests(tmp_path, interval=0.0).rests == 0


def test_with_a_backlog_it_never_rests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resting slows the learner by about a third: not while rows queue up behind it."""
    monkeypatch.setattr(learner_module, "MAX_BATCH", 0)  # any queue counts as a backlog
    assert _rests(tmp_path, interval=0.05).rests == 0


def test_with_more_ranks_in_flight_it_never_rests(tmp_path: Path) -> None:
    """The event loop then has work queued whenever the learner holds the GIL: resting would
    only add handoffs (the learner's CPU an event at 32 in flight rose by 20-50%)."""
    limit = learner_module.REST_MAX_RANKS_IN_FLIGHT
    assert _rests(tmp_path / "at", interval=0.05, ranks_in_flight=limit).rests == 3
    assert _rests(tmp_path / "past", interval=0.05, ranks_in_flight=limit + 1).rests == 0


def test_ranks_in_flight_counts_ranks_until_their_commit_settles(tmp_path: Path) -> None:
    seen: list[int] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(ExperimentConfig("e", OTHER_ARGS, 10.0, 0.0))
        real, may_commit = engine._commit, asyncio.Event()

        def held_commit(rows: list[object], *args: object, **kwargs: object) -> object:
            async def later() -> object:
                await may_commit.wait()
                return await real(rows, *args, **kwargs)  # type: ignore[arg-type]

            return asyncio.ensure_future(later())

        engine._commit = held_commit  # type: ignore[method-assign,assignment]
        ranks = [asyncio.ensure_future(_rank(engine, "e", f"r{i}", 0.1)) for i in range(3)]
        repeat = asyncio.ensure_future(_rank(engine, "e", "r0", 0.1))  # answered as r0 was
        for _ in range(10_000):  # a bound against hanging, never reached when the code is right
            if engine.ranks_in_flight == 4:
                break
            await asyncio.sleep(0.001)
        seen.append(engine.ranks_in_flight)
        engine._commit = real  # type: ignore[method-assign]
        may_commit.set()
        await asyncio.gather(*ranks, repeat)
        seen.append(engine.ranks_in_flight)

    run(tmp_path, scenario)
    assert seen == [4, 0]
