"""Reward windows longer than the horizon (up to 30 days) stay in the log, not in memory, until
their end nears or an input arrives for them, and still close exactly as short ones do."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.engine import engine as engine_module
from bandit_server.engine.engine import HORIZON_SECONDS, Engine
from tests.test_reward_windows import Clock, costs, rank, run

WEEK = 7 * 24 * 3600.0


def week_config(aggregation: Aggregation, default_reward: float = 0.25) -> ExperimentConfig:
    return ExperimentConfig(
        "w", "--cb_explore_adf --epsilon 0.2", WEEK, default_reward, aggregation
    )


def held(engine: Engine) -> set[str]:
    return set(engine._runtimes["w"].open)


async def close_all(engine: Engine) -> None:
    await engine.load_due_windows()
    await engine.close_due_windows()


async def _week_of_events(engine: Engine, clock: Clock) -> None:
    """Five events a week long: untouched, rewarded twice, deferred then activated, deferred
    never activated, rewarded late."""
    for event_id in ("quiet", "rewarded", "late"):
        await rank(engine, event_id)
    await rank(engine, "activated", deferred=True)
    await rank(engine, "never", deferred=True)
    assert held(engine) == set()  # a week away: only in the log
    clock.now += 3600
    assert await engine.reward("w", "rewarded", 0.5) is False  # brought in by its input
    await engine.activate("w", "activated")
    assert held(engine) == {"rewarded", "activated"}


def test_long_windows_close_as_short_ones_do_without_being_held(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await _week_of_events(engine, clock)
        clock.now += 3600
        await engine.reward("w", "rewarded", 0.25)  # summed with the first
        await close_all(engine)
        assert costs(engine) == {}
        clock.now = clock.now - 2 * 3600 + WEEK - HORIZON_SECONDS / 2  # the ends are near
        await engine.load_due_windows()
        assert held(engine) == {"quiet", "rewarded", "late", "activated", "never"}
        clock.now += HORIZON_SECONDS  # past every deadline
        assert await engine.reward("w", "late", 9.0) is True
        await close_all(engine)
        assert costs(engine) == {"quiet": -0.25, "rewarded": -0.75, "late": -0.25,
                                 "activated": -0.25}  # fmt: skip
        assert held(engine) == set()

    run(tmp_path, scenario)


def test_a_restart_brings_back_the_windows_with_inputs_and_leaves_the_rest_in_the_log(
    tmp_path: Path,
) -> None:
    async def before(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await _week_of_events(engine, clock)

    async def after(engine: Engine, clock: Clock) -> None:
        assert held(engine) == {"rewarded", "activated"}
        assert engine._runtimes["w"].open["rewarded"].reward_sum == 0.5
        await engine.reward("w", "rewarded", 0.25)
        clock.now += WEEK
        await close_all(engine)
        assert costs(engine) == {"quiet": -0.25, "rewarded": -0.75, "late": -0.25,
                                 "activated": -0.25}  # fmt: skip

    run(tmp_path, before)
    run(tmp_path, after)


def test_earliest_learns_a_long_windows_first_reward_at_once(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.EARLIEST))
        await rank(engine, "e1")
        assert await engine.reward("w", "e1", 0.7) is False
        assert costs(engine) == {"e1": -0.7}
        clock.now += WEEK + 1
        await close_all(engine)
        assert costs(engine) == {"e1": -0.7}

    run(tmp_path, scenario)


def test_a_failed_read_keeps_the_watermark_below_the_windows_it_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window closing after one the read missed (brought in by its reward) must not carry the
    watermark past the missed one: a restart reopens it."""
    real = engine_module.open_events

    def failing(*args: object) -> object:
        raise OSError("disk I/O error")

    async def before(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await rank(engine, "far")
        clock.now += 10
        await rank(engine, "touched")
        await engine.reward("w", "touched", 1.0)
        monkeypatch.setattr(engine_module, "open_events", failing)
        clock.now += WEEK + 10
        await close_all(engine)  # "touched" closes; the read that would bring "far" in fails
        assert costs(engine) == {"touched": -1.0}
        await engine._save_watermarks()
        assert engine.log.closed_until("w") < 1_000_000.0 + WEEK  # below "far"'s deadline

    async def after(engine: Engine, clock: Clock) -> None:
        clock.now += WEEK + 1
        await close_all(engine)
        assert costs(engine) == {"touched": -1.0, "far": -0.25}

    run(tmp_path, before)
    monkeypatch.setattr(engine_module, "open_events", real)
    run(tmp_path, after)


def test_short_windows_are_held_at_once(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        short = dataclasses.replace(week_config(Aggregation.SUM), reward_wait_seconds=600.0)
        await engine.create_experiment(short)
        await rank(engine, "e1")
        assert held(engine) == {"e1"}

    run(tmp_path, scenario)
