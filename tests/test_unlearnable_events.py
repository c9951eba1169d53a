"""An event that would break the model is skipped, recorded, and skipped again after a restart.

The numeric limits hold each value, not each example: under --ftrl --squarecb one feature of
1e10 and one reward of 1e15, both within them, make VW's weights non-finite. Before, every later
Rank of that experiment answered INTERNAL, after a restart too (found by an adversarial run).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from bandit_server.core.dsjson import prediction_line
from bandit_server.export import iter_dsjson
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from tests.helpers import normalised, replay
from tests.server import ServerThread, actions_pb, namespaces_pb

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
        if interval == 0:
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
