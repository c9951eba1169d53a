"""Reward aggregation, default rewards, late rewards and deferred activation, on a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.core.types import RankInput, action_from_mapping
from bandit_server.engine.engine import Engine

ACTIONS = tuple(
    action_from_mapping({"id": f"a{i}", "features": {"Action": {"k": f"k{i}"}}}) for i in range(3)
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def run(data_dir: Path, scenario: Callable[[Engine, Clock], Awaitable[None]]) -> None:
    async def main() -> None:
        clock = Clock()
        engine = Engine(data_dir, synchronous="NORMAL", clock=clock)
        await engine.start()
        try:
            await scenario(engine, clock)
        finally:
            await engine.stop()

    asyncio.run(main())


def config(aggregation: Aggregation, default_reward: float = 0.0) -> ExperimentConfig:
    return ExperimentConfig(
        "w", "--cb_explore_adf --epsilon 0.2", 10.0, default_reward, aggregation, 0.0
    )


def costs(engine: Engine) -> dict[str, float]:
    rows = engine.log._reader().execute("SELECT event_id, cost FROM learned ORDER BY seq")
    return dict(rows)


async def rank(engine: Engine, event_id: str, deferred: bool = False) -> None:
    await engine.rank(RankInput("w", event_id, (), ACTIONS, defer_activation=deferred))


def test_earliest_learns_the_first_reward_at_once_and_ignores_later_ones(tmp_path: Path) -> None:
    """EARLIEST: the first reward is learned at once; later in-window rewards are only logged."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        await rank(engine, "e1")
        assert await engine.reward("w", "e1", 0.7) is False
        assert costs(engine) == {"e1": -0.7}
        assert engine.model("w").learned_count == 1
        clock.now += 5
        assert await engine.reward("w", "e1", 1.0) is False
        clock.now += 20
        await engine.close_due_windows()
        assert costs(engine) == {"e1": -0.7}
        assert len(engine.log.rewards("w", "e1")) == 2

    run(tmp_path, scenario)


def test_sum_adds_rewards_within_the_window_and_learns_at_its_end(tmp_path: Path) -> None:
    """SUM: nothing is learned before the deadline; then the in-window sum is learned once."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.SUM))
        await rank(engine, "e1")
        await engine.reward("w", "e1", 0.5)
        clock.now += 4
        await engine.reward("w", "e1", 0.25)
        await engine.close_due_windows()
        assert costs(engine) == {}
        clock.now += 7  # past the 10 s window
        assert await engine.reward("w", "e1", 5.0) is True  # late: logged, not learned
        await engine.close_due_windows()
        assert costs(engine) == {"e1": -0.75}
        late = [r.late for r in engine.log.rewards("w", "e1")]
        assert late == [False, False, True]

    run(tmp_path, scenario)


def test_activated_event_without_reward_learns_the_default(tmp_path: Path) -> None:
    """No reward by the end of the window: the default reward is learned."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST, default_reward=-0.5))
        await rank(engine, "quiet")
        clock.now += 11
        await engine.close_due_windows()
        assert costs(engine) == {"quiet": 0.5}

    run(tmp_path, scenario)


def test_deferred_events_learn_only_when_activated_in_the_window(tmp_path: Path) -> None:
    """A deferred event is learned only if activated within the window; a reward that came
    before the activation is learned at activation; a never-activated one is never learned."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        await rank(engine, "shown", deferred=True)
        await rank(engine, "never", deferred=True)
        await rank(engine, "too-late", deferred=True)
        await engine.reward("w", "shown", 1.0)
        await engine.reward("w", "never", 1.0)
        assert costs(engine) == {}
        clock.now += 3
        assert await engine.activate("w", "shown") is False
        assert costs(engine) == {"shown": -1.0}
        clock.now += 8
        assert await engine.activate("w", "too-late") is True
        await engine.close_due_windows()
        assert costs(engine) == {"shown": -1.0}

    run(tmp_path, scenario)


def test_open_windows_survive_a_restart(tmp_path: Path) -> None:
    """Rewards logged before a restart still count when the window closes after it."""

    async def first(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.SUM))
        await rank(engine, "e1")
        await engine.reward("w", "e1", 2.0)

    async def second(engine: Engine, clock: Clock) -> None:
        clock.now += 4
        await engine.reward("w", "e1", 1.0)
        clock.now += 10
        await engine.close_due_windows()
        assert costs(engine) == {"e1": -3.0}

    run(tmp_path, first)
    run(tmp_path, second)


def test_snapshot_interval_serves_a_stale_model_until_the_next_publish(tmp_path: Path) -> None:
    """With model_update_interval_seconds > 0, Rank serves the published snapshot; learning
    shows up only once the learner publishes a new one."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(
            ExperimentConfig("w", "--cb_explore_adf --epsilon 0.2", 600.0, 0.0,
                             Aggregation.EARLIEST, 3600.0)
        )  # fmt: skip
        before = await engine.rank(RankInput("w", "e0", (), ACTIONS))
        for i in range(20):
            await engine.rank(RankInput("w", f"e{i + 1}", (), ACTIONS))
            await engine.reward("w", f"e{i + 1}", 1.0)
        while engine.model("w").learned_count < 20:
            await asyncio.sleep(0.01)
        stale = await engine.rank(RankInput("w", "e-stale", (), ACTIONS))
        assert stale.model_version == before.model_version
        engine.model("w").publish()
        fresh = await engine.rank(RankInput("w", "e-fresh", (), ACTIONS))
        assert fresh.model_version != before.model_version

    run(tmp_path, scenario)


def test_switching_from_live_to_snapshots_keeps_serving_what_was_learned(tmp_path: Path) -> None:
    """Interval 0 -> 3600 with the same vw_args: Rank keeps the model it served live, not the
    snapshot taken when the experiment was created."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        live = ExperimentConfig("w", "--cb_explore_adf --squarecb", 600.0, 0.0,
                                Aggregation.EARLIEST, 0.0)  # fmt: skip
        await engine.create_experiment(live)
        for i in range(30):
            await engine.rank(RankInput("w", f"e{i}", (), ACTIONS))
            await engine.reward("w", f"e{i}", 1.0)
        served = await engine.rank(RankInput("w", "before", (), ACTIONS))
        await engine.update_experiment(
            dataclasses.replace(live, model_update_interval_seconds=3600.0)
        )
        after = await engine.rank(RankInput("w", "after", (), ACTIONS))
        assert after.model_version == served.model_version
        assert sorted(after.ranking) == sorted(served.ranking)

    run(tmp_path, scenario)


def test_changing_vw_args_retrains_on_the_learned_log(tmp_path: Path) -> None:
    """UpdateExperiment with new vw_args rebuilds the model from every learned event."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        for i in range(10):
            await rank(engine, f"e{i}")
            await engine.reward("w", f"e{i}", 1.0)
        new = ExperimentConfig("w", "--cb_explore_adf --squarecb", 10.0, 0.0,
                               Aggregation.EARLIEST, 0.0)  # fmt: skip
        status = await engine.update_experiment(new)
        assert status.learned_events == 10
        assert status.config.vw_args == "--cb_explore_adf --squarecb"

    run(tmp_path, scenario)
