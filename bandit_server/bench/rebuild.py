"""What a model rebuild costs the other experiments: interval-0 Reward latency on one experiment
while another, broken by a poison event, is rebuilt from its whole log.

R runs `--cb_explore_adf --ftrl --rnd 2` (never resumed from checkpoints, so a rebuild replays
every learned event); one event with a 1e10 feature and a 1e15 reward breaks it. O runs at
interval 0, so each of its Rewards returns only once the learner has learned it.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from bandit_server import logging as log_config
from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.core.types import Action, Feature, Namespace, RankInput
from bandit_server.engine.engine import Engine

POISONED_ARGS = "--cb_explore_adf --ftrl --rnd 2"
OTHER_ARGS = "--cb_explore_adf --squarecb"
ACTIONS = tuple(Action(f"a{i}", (Namespace("Action", (Feature("k", f"k{i}"),)),)) for i in range(3))


async def _event(
    engine: Engine, experiment: str, event_id: str, x: float, reward: float
) -> tuple[float, float]:
    """Rank then Reward; returns when the Reward started and ended."""
    context = (Namespace("User", (Feature("x", x), Feature("s", "s1"))),)
    await engine.rank(RankInput(experiment, event_id, context, ACTIONS))
    start = time.perf_counter()
    await engine.reward(experiment, event_id, reward)
    return start, time.perf_counter()


async def _measure(data_dir: Path, warm: int) -> dict[str, float]:
    engine = Engine(data_dir, synchronous="NORMAL")
    await engine.start()
    try:
        await engine.create_experiment(
            ExperimentConfig("R", POISONED_ARGS, 10.0, 0.0, Aggregation.EARLIEST, 1.0)
        )
        await engine.create_experiment(
            ExperimentConfig("O", OTHER_ARGS, 10.0, 0.0, Aggregation.EARLIEST, 0.0)
        )
        rng = random.Random(7)
        for i in range(warm):
            await _event(engine, "R", f"w{i}", rng.gauss(0, 1), float(rng.random() < 0.5))
        while engine.get_experiment("R").learned_events < warm:
            await asyncio.sleep(0.01)

        rewards: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def other() -> None:
            i = 0
            while not stop.is_set():
                rewards.append(await _event(engine, "O", f"o{i}", 0.1, 1.0))
                i += 1

        task = asyncio.ensure_future(other())
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        await _event(engine, "R", "poison", 1e10, 1e15)
        await _event(engine, "R", "after", 0.3, 1.0)  # learned once R is rebuilt
        while engine.get_experiment("R").learned_events < warm + 1:
            await asyncio.sleep(0.005)
        end = time.perf_counter()
        stop.set()
        await task
    finally:
        await engine.stop()
    # A Reward counts as during the rebuild if the two overlap at all.
    quiet = np.array([e - s for s, e in rewards if e < start]) * 1e3
    busy = np.array([e - s for s, e in rewards if e >= start and s <= end]) * 1e3
    return {
        "warm_events": float(warm),
        "rebuild_s": end - start,
        "quiet_p50_ms": float(np.percentile(quiet, 50)),
        "quiet_max_ms": float(quiet.max()),
        "during_rewards": float(len(busy)),
        "during_p50_ms": float(np.percentile(busy, 50)),
        "during_p99_ms": float(np.percentile(busy, 99)),
        "during_max_ms": float(busy.max()),
    }


def run(warm: int = 8_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp), warm))


def report(result: dict[str, float]) -> None:
    print(
        f"rebuild of a {result['warm_events']:.0f}-event {POISONED_ARGS!r} log after a poison "
        f"event: {result['rebuild_s']:.2f} s; meanwhile another experiment's interval-0 Rewards "
        f"({result['during_rewards']:.0f}) took p50 {result['during_p50_ms']:.1f} ms, p99 "
        f"{result['during_p99_ms']:.1f} ms, max {result['during_max_ms']:.1f} ms (before it: "
        f"p50 {result['quiet_p50_ms']:.1f} ms, max {result['quiet_max_ms']:.1f} ms)"
    )


def main() -> None:
    log_config.configure("warning")
    report(run())


if __name__ == "__main__":
    main()
