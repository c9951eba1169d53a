"""What a model rebuild costs the other experiments: interval-0 Rank + Reward latency on one
experiment while another is rebuilt from its whole log, after a poison event broke it and after
its vw_args changed.

R runs `--cb_explore_adf --ftrl --rnd 2` (never resumed from checkpoints, so a rebuild replays
every learned event); one event with a 1e10 feature and a 1e15 reward breaks it. O runs at
interval 0, so each of its Rewards returns only once the learner has learned it; each of its
events is timed from its Rank to the end of its Reward.
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
UPDATED_ARGS = "--cb_explore_adf --ftrl --rnd 3"
OTHER_ARGS = "--cb_explore_adf --squarecb"
ACTIONS = tuple(Action(f"a{i}", (Namespace("Action", (Feature("k", f"k{i}"),)),)) for i in range(3))


async def _event(
    engine: Engine, experiment: str, event_id: str, x: float, reward: float
) -> tuple[float, float]:
    """Rank then Reward; returns when the Rank started and the Reward ended (with interval 0
    a Reward waits for its event to be learned, and a Rank for the events before it)."""
    context = (Namespace("User", (Feature("x", x), Feature("s", "s1"))),)
    start = time.perf_counter()
    await engine.rank(RankInput(experiment, event_id, context, ACTIONS))
    await engine.reward(experiment, event_id, reward)
    return start, time.perf_counter()


def _stats(events: list[tuple[float, float]], start: float, end: float) -> dict[str, float]:
    # An event counts as during the rebuild if the two overlap at all.
    busy = np.array([e - s for s, e in events if e >= start and s <= end]) * 1e3
    return {
        "seconds": end - start,
        "events": float(len(busy)),
        "p50_ms": float(np.percentile(busy, 50)),
        "p99_ms": float(np.percentile(busy, 99)),
        "max_ms": float(busy.max()),
    }


async def _measure(data_dir: Path, warm: int) -> dict[str, dict[str, float]]:
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

        events: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def other() -> None:
            i = 0
            while not stop.is_set():
                events.append(await _event(engine, "O", f"o{i}", 0.1, 1.0))
                i += 1

        task = asyncio.ensure_future(other())
        await asyncio.sleep(0.5)
        windows = {"quiet": (0.0, time.perf_counter())}
        start = time.perf_counter()
        await _event(engine, "R", "poison", 1e10, 1e15)
        await _event(engine, "R", "after", 0.3, 1.0)  # learned once R is rebuilt
        while engine.get_experiment("R").learned_events < warm + 1:
            await asyncio.sleep(0.005)
        windows["poison"] = (start, time.perf_counter())
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        await engine.update_experiment(
            ExperimentConfig("R", UPDATED_ARGS, 10.0, 0.0, Aggregation.EARLIEST, 1.0)
        )
        windows["update"] = (start, time.perf_counter())
        stop.set()
        await task  # an event held up by a rebuild may end only now
    finally:
        await engine.stop()
    return {name: _stats(events, *window) for name, window in windows.items()}


def run(warm: int = 8_000) -> dict[str, dict[str, float]]:
    log_config.configure("warning")  # the engine's info lines would bury the figures
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp), warm))


def report(result: dict[str, dict[str, float]], warm: int = 8_000) -> None:
    def line(stats: dict[str, float]) -> str:
        return (
            f"p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
            f"max {stats['max_ms']:.1f} ms ({stats['events']:.0f} events)"
        )

    print(f"another experiment's interval-0 Rank + Reward, alone: {line(result['quiet'])}")
    print(
        f"  while a poison event's rebuild of a {warm}-event {POISONED_ARGS!r} log ran "
        f"({result['poison']['seconds']:.2f} s): {line(result['poison'])}"
    )
    print(
        f"  while vw_args changed to {UPDATED_ARGS!r} and retrained on it "
        f"({result['update']['seconds']:.2f} s): {line(result['update'])}"
    )


def main() -> None:
    report(run())


if __name__ == "__main__":
    main()
