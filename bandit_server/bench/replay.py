"""Counterfactual replay beside VW's own command-line driver on the same DSJSON file.

A seeded 100,000-event log (5 actions, three shared namespaces and two action namespaces) is
written once. Then, in this process and alternating so machine noise hits both alike: VW's
driver (`--dsjson -d file`, one thread) and our replay of the same VW command line over the
loaded log (parse, predict, learn, record the pmf). Loading the log (once per evaluation,
shared by every policy replayed on it) is timed apart. Run: python -m bandit_server.bench.replay
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bandit_server.core.dsjson import DecisionRecord, Label, context_json, export_line
from bandit_server.core.types import Action, Feature, Namespace
from bandit_server.learners.vw import run_vw_command_line
from bandit_server.offline.dataset import load_dsjson
from bandit_server.offline.replay import vw_pmfs

VW_ARGS = "--cb_explore_adf --epsilon 0.2 -q UA"
EVENTS = 100_000
ACTIONS = 5
ROUNDS = 3


def write_log(path: Path, n: int = EVENTS, seed: int = 0, k: int = ACTIONS) -> None:
    """A seeded log: a logger that favours each segment's good action; clicks by segment."""
    rng = np.random.default_rng(seed)
    segments = rng.integers(0, 3, size=n)
    countries = rng.integers(0, 20, size=n)
    hours = rng.integers(0, 24, size=n)
    ages = np.round(rng.random(size=n), 3)
    draws = rng.random(size=(n, 2))
    actions = tuple(
        Action(
            f"v{j}",
            (
                Namespace("Action", (Feature("variant", f"v{j}"), Feature("len", float(j)))),
                Namespace("Style", (Feature("s", f"st{j % 2}"),)),
            ),
        )
        for j in range(k)
    )
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            segment = int(segments[i])
            context = (
                Namespace("User", (Feature("segment", f"s{segment}"), Feature("age", ages[i]))),
                Namespace("Geo", (Feature("country", f"c{countries[i]}"),)),
                Namespace("Time", (Feature("hour", f"h{hours[i]}"),)),
            )
            pmf = np.full(k, 0.1)
            pmf[segment] = 1.0 - 0.1 * (k - 1)
            chosen = int(np.searchsorted(np.cumsum(pmf), draws[i, 0] * pmf.sum()))
            chosen = min(chosen, k - 1)
            reward = float(draws[i, 1] < (0.7 if chosen == segment else 0.2))
            order = (chosen, *(j for j in range(k) if j != chosen))
            record = DecisionRecord(
                event_id=f"e{i}",
                timestamp="2026-01-01T00:00:00.000000Z",
                c_json=context_json(context, actions),
                ranking_indices=order,
                ranking_probabilities=tuple(float(pmf[j]) for j in order),
                model_version="bench",
                label=Label(chosen, float(pmf[chosen]), -reward),
            )
            out.write(export_line(record) + "\n")


def _summary(what: str, seconds: list[float], events: int) -> dict[str, object]:
    best, median = min(seconds), statistics.median(seconds)
    return {
        "what": what,
        "runs": len(seconds),
        "best_s": best,
        "median_s": median,
        "best_events_per_s": events / best,
        "median_events_per_s": events / median,
    }


def run(events: int = EVENTS, rounds: int = ROUNDS, args: str = VW_ARGS) -> list[dict[str, object]]:
    """Timings of VW's driver, our replay, and our log loading on the same seeded file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.json"
        write_log(path, events)
        start = time.perf_counter()
        dataset = load_dsjson(path)
        _ = dataset.vw_lines  # built once per log, shared by every policy replayed on it
        load_seconds = time.perf_counter() - start
        driver: list[float] = []
        ours: list[float] = []
        for _round in range(rounds):
            start = time.perf_counter()
            run_vw_command_line(["--dsjson", "-d", str(path), *args.split(), "--quiet"])
            driver.append(time.perf_counter() - start)
            start = time.perf_counter()
            vw_pmfs(dataset, args, progress=False)
            ours.append(time.perf_counter() - start)
    rows = [
        _summary("vw_driver", driver, events),
        _summary("replay", ours, events),
        _summary("load", [load_seconds], events),
        _summary("load_and_replay", [load_seconds + min(ours)], events),
    ]
    for row in rows:
        row["speed_vs_vw_best"] = min(driver) / float(row["best_s"])  # type: ignore[arg-type]
    return rows


def main() -> None:
    print(f"replay of `{VW_ARGS}` over {EVENTS:,} events (k={ACTIONS}) vs VW's driver")
    rows = run()
    print(f"{'':<16}{'best s':>8}{'median s':>10}{'events/s':>11}{'vs VW':>7}")
    for row in rows:
        print(
            f"{row['what']:<16}{row['best_s']:>8.3f}{row['median_s']:>10.3f}"
            f"{row['best_events_per_s']:>11,.0f}{row['speed_vs_vw_best']:>7.2f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
