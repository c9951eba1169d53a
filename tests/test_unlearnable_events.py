"""An event that would break the model is skipped, recorded, and skipped again after a restart.

The numeric limits hold each value, not each example: under --ftrl --squarecb one feature of
1e10 and one reward of 1e15, both within them, make VW's weights non-finite. Before, every later
Rank of that experiment answered INTERNAL, after a restart too (found by an adversarial run).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from bandit_server.core.dsjson import prediction_line
from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.core.types import Feature, Namespace, RankInput
from bandit_server.engine.engine import Engine
from bandit_server.export import iter_dsjson
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.storage.sqlite_log import SQLiteDecisionLog
from tests.helpers import normalised, replay
from tests.server import ServerThread, actions_pb, namespaces_pb
from tests.test_reward_windows import ACTIONS as ENGINE_ACTIONS
from tests.test_reward_windows import Clock, run

VW_ARGS = "--cb_explore_adf --ftrl --squarecb"
ACTIONS = actions_pb([{"id": f"a{i}", "features": {"Action": {"k": f"k{i}"}}} for i in range(3)])
PROBES = ((0.1, -0.3), (1.2, 0.4), (-0.8, 2.0))


def _rank(server: ServerThread, x: float, event_id: str = "") -> pb.RankResponse:
    response: pb.RankResponse = server.bandit.Rank(
        pb.RankRequest(
            experiment="f",
            event_id=event_id,
            context=namespaces_pb({"User": {"x": x, "s": "s1"}}),
            actions=ACTIONS,
        )
    )
    assert all(math.isfinite(r.probability) for r in response.ranking)
    return response


def _traffic(server: ServerThread, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        ranked = _rank(server, float(rng.normal()))
        value = float(rng.random() < 0.3 + 0.2 * int(ranked.chosen_action_id[1:]))
        server.bandit.Reward(
            pb.RewardRequest(experiment="f", event_id=ranked.event_id, value=value)
        )


def _poison(server: ServerThread) -> None:
    _rank(server, 1e10, event_id="poison")
    server.bandit.Reward(pb.RewardRequest(experiment="f", event_id="poison", value=1e15))


def _status(server: ServerThread, handled: int) -> pb.Experiment:
    """The experiment once `handled` events were learned or skipped (a bound, not a timing)."""
    for _ in range(2_000):
        status: pb.Experiment = server.experiments.GetExperiment(pb.GetExperimentRequest(name="f"))
        if status.learned_events + status.unlearnable_events >= handled:
            return status
        time.sleep(0.005)
    raise AssertionError(f"the learner never reached {handled} events")


def _served(server: ServerThread) -> list[dict[int, float]]:
    return [
        {int(r.action_id[1:]): r.probability for r in _rank(server, x).ranking} for x, _ in PROBES
    ]


def _expected(data_dir: Path) -> tuple[list[str], list[dict[int, float]]]:
    """The exported log, and what a fresh VW trained on its learned lines predicts."""
    lines = list(iter_dsjson(data_dir, "f"))
    policy, _, _ = replay(VW_ARGS, lines)
    c = json.loads(lines[0])["c"]
    expected = []
    for x, _ in PROBES:
        c["User"] = {"x": x, "s": "s1"}
        pmf = policy.predict_one(prediction_line(json.dumps(c, separators=(",", ":"))))
        expected.append({index: p for index, p in normalised(pmf).items()})
    return lines, expected


@pytest.mark.parametrize("interval", [0.0, 0.05])
def test_an_event_that_breaks_the_model_is_skipped_and_the_model_learns_on(
    tmp_path: Path, interval: float
) -> None:
    data_dir = tmp_path / "data"
    server = ServerThread(data_dir).start()
    try:
        server.experiments.CreateExperiment(
            pb.CreateExperimentRequest(
                experiment=pb.Experiment(
                    name="f", vw_args=VW_ARGS, model_update_interval_seconds=interval
                )
            )
        )
        _traffic(server, 20, seed=1)
        _poison(server)
        _traffic(server, 20, seed=2)  # every Rank answers, with finite probabilities
        status = _status(server, 41)
        assert (status.learned_events, status.unlearnable_events) == (40, 1)
        assert not status.learning_stalled
    finally:
        server.stop()
    lines, expected = _expected(data_dir)
    skipped = [json.loads(line) for line in lines if json.loads(line).get("_skipLearn")]
    assert [line["EventId"] for line in skipped] == ["poison"]
    with sqlite3.connect(data_dir / "decisions.sqlite3") as con:
        ((event_id, reason),) = con.execute("SELECT event_id, reason FROM unlearnable").fetchall()
    assert event_id == "poison" and "nan" in reason

    server = ServerThread(data_dir).start()  # restored without the event, from its mark
    try:
        status = _status(server, 41)
        assert (status.learned_events, status.unlearnable_events) == (40, 1)
        assert _served(server) == expected
    finally:
        server.stop()


def test_a_lost_mark_is_found_again_at_start(tmp_path: Path) -> None:
    """A crash between learning the event and recording it leaves no mark: the replay at start
    breaks on it again, records it, and starts over without it."""
    data_dir = tmp_path / "data"
    server = ServerThread(data_dir).start()
    try:
        server.experiments.CreateExperiment(
            pb.CreateExperimentRequest(experiment=pb.Experiment(name="f", vw_args=VW_ARGS))
        )
        _traffic(server, 10, seed=3)
        _poison(server)
        _traffic(server, 10, seed=4)
        before = _served(server)
    finally:
        server.stop()
    with sqlite3.connect(data_dir / "decisions.sqlite3") as con:
        con.execute("DELETE FROM unlearnable")
    for checkpoint in (data_dir / "models").rglob("*"):
        if checkpoint.is_file():
            checkpoint.unlink()  # replay the whole log, the poison included

    server = ServerThread(data_dir).start()
    try:
        status = _status(server, 21)
        assert (status.learned_events, status.unlearnable_events) == (20, 1)
        assert _served(server) == before
    finally:
        server.stop()
    _, expected = _expected(data_dir)
    assert before == expected


async def _engine_event(engine: Engine, event_id: str, x: float, reward: float) -> None:
    context = (Namespace("User", (Feature("x", x), Feature("s", "s1"))),)
    ranked = await engine.rank(RankInput("w", event_id, context, ENGINE_ACTIONS))
    assert all(math.isfinite(p) for _, p in ranked.ranking)
    await engine.reward("w", event_id, reward)


async def _learned(engine: Engine, handled: int) -> None:
    """Until the learner handled `handled` events or stalled (a bound, not a timing)."""
    for _ in range(2_000):
        status = engine.get_experiment("w")
        if status.learning_stalled or status.learned_events + status.unlearnable_events >= handled:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the learner never reached {handled} events")


async def _probe(engine: Engine, event_id: str) -> tuple[tuple[str, float], ...]:
    """What Rank serves now on a fixed context (the probe is logged, never rewarded)."""
    context = (Namespace("User", (Feature("x", 0.25), Feature("s", "s1"))),)
    ranked = await engine.rank(RankInput("w", event_id, context, ENGINE_ACTIONS))
    return tuple(sorted(ranked.ranking))


async def _checkpoint(engine: Engine) -> None:
    await asyncio.to_thread(engine.learner.call, engine.learner.checkpoint_all)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_events_that_keep_breaking_the_model_stall_it_before_the_third(
    tmp_path: Path, checkpoint: bool
) -> None:
    """Under --pistol one extreme event leaves VW's state finite but out of range: it passes
    the check, and every later ordinary event breaks the model. Skipping each would lose them
    all, one rebuild each (found by review); instead two are skipped, learning stalls before
    the third, Rank serves the model as it stood, and a restart (also from a checkpoint taken
    between the skips) stalls at the same place."""
    vw_args = "--cb_explore_adf --pistol --squarecb"
    served: list[tuple[tuple[str, float], ...]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(
            ExperimentConfig("w", vw_args, 10.0, 0.0, Aggregation.EARLIEST, 0.0)
        )
        for i in range(200):
            await _engine_event(engine, f"n{i}", 0.1 * (i % 7), float(i % 2))
        await _engine_event(engine, "extreme", 1e5, 1e10)
        served.append(await _probe(engine, "probe-1"))
        for i in range(5):
            await _engine_event(engine, f"m{i}", 0.1 * (i % 7), float(i % 2))
            if checkpoint and i == 0:
                await _checkpoint(engine)
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (201, 2)
        assert status.learning_stalled
        assert await _probe(engine, "probe-2") == served[0]

    run(tmp_path, scenario)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (201, 2)
        assert status.learning_stalled
        assert await _probe(engine, "probe-3") == served[0]

    run(tmp_path, after_restart)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_two_breaking_events_in_a_row_are_both_skipped(tmp_path: Path, checkpoint: bool) -> None:
    """Two separate poison events back to back are not taken for upstream damage: both are
    skipped and learning goes on, live and after a restart (from a checkpoint between them
    too: before, the restart and the live model disagreed; found by review)."""
    served: list[tuple[tuple[str, float], ...]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(
            ExperimentConfig("w", VW_ARGS, 10.0, 0.0, Aggregation.EARLIEST, 0.0)
        )
        for i in range(10):
            await _engine_event(engine, f"n{i}", 0.1 * i, float(i % 2))
        await _engine_event(engine, "poison-1", 1e10, 1e15)
        if checkpoint:
            await _checkpoint(engine)
        await _engine_event(engine, "poison-2", 1e10, 1e15)
        for i in range(5):
            await _engine_event(engine, f"m{i}", 0.1 * i, float(i % 2))
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (15, 2)
        assert not status.learning_stalled
        served.append(await _probe(engine, "probe-1"))

    run(tmp_path, scenario)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (15, 2)
        assert not status.learning_stalled
        assert await _probe(engine, "probe-2") == served[0]

    run(tmp_path, after_restart)


@pytest.mark.parametrize("interval", [0.0, 0.05])
def test_an_event_that_breaks_the_model_and_cannot_be_recorded_stalls_it_before_the_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float
) -> None:
    """Before, the model stayed broken: with interval 0 every Rank got UNAVAILABLE, with an
    interval the broken model was published and every Rank failed (found by review). A restart
    that can record the event skips it and learns on."""

    def locked(*args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SQLiteDecisionLog, "mark_unlearnable", locked)

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(
            ExperimentConfig("w", VW_ARGS, 10.0, 0.0, Aggregation.EARLIEST, interval)
        )
        for i in range(10):
            await _engine_event(engine, f"n{i}", 0.1 * i, float(i % 2))
        await _engine_event(engine, "poison", 1e10, 1e15)
        await _learned(engine, 11)
        for i in range(5):  # every Rank answers, with finite probabilities
            await _engine_event(engine, f"m{i}", 0.1 * i, float(i % 2))
            await asyncio.sleep(interval)  # let snapshots be published, if they would be
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (10, 0)
        assert status.learning_stalled

    run(tmp_path, scenario)
    monkeypatch.undo()

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (15, 1)
        assert not status.learning_stalled

    run(tmp_path, after_restart)


def test_a_server_that_cannot_record_an_unlearnable_event_at_start_still_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A logged number past what -q allows is refused before VW sees it; if the mark cannot be
    written while replaying at start, the model stalls there instead of the start failing
    (found by review)."""
    plain = ExperimentConfig("w", "--cb_explore_adf --squarecb", 10.0, 0.0)
    interacted = ExperimentConfig("w", "--cb_explore_adf --squarecb -q ::", 10.0, 0.0)

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(plain)
        await _engine_event(engine, "e1", 0.5, 1.0)
        big = (Namespace("User", (Feature("x", 2e19),)),)
        await engine.rank(RankInput("w", "e2", big, ENGINE_ACTIONS))
        await engine.reward("w", "e2", 1.0)
        status = await engine.update_experiment(interacted)
        assert (status.learned_events, status.unlearnable_events) == (1, 1)

    run(tmp_path, scenario)
    with sqlite3.connect(tmp_path / "decisions.sqlite3") as con:
        con.execute("DELETE FROM unlearnable")
    for checkpoint in (tmp_path / "models").rglob("*"):
        if checkpoint.is_file():
            checkpoint.unlink()

    def locked(*args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SQLiteDecisionLog, "mark_unlearnable", locked)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (1, 0)
        assert status.learning_stalled
        await _probe(engine, "probe")

    run(tmp_path, after_restart)
