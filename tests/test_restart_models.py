"""A restart in the middle of learning leaves the model exactly where the log says it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bandit_server.core.dsjson import prediction_line
from bandit_server.export import iter_dsjson
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from tests.helpers import normalised, replay
from tests.server import ServerThread, actions_pb, namespaces_pb

ACTIONS = actions_pb(
    [{"id": f"a{i}", "features": {"Action": {"w": float(i) / 4, "k": f"k{i}"}}} for i in range(4)]
)


def _context(x: float, y: float) -> list[pb.Namespace]:
    return namespaces_pb({"User": {"x": x, "y": y}})


def _traffic(server: ServerThread, n: int, seed: int) -> None:
    # Continuous features and noisy rewards keep the explorers' members disagreeing, so any
    # state lost in a checkpoint shows up in the served probabilities.
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x, y = rng.normal(size=2)
        ranked = server.bandit.Rank(
            pb.RankRequest(experiment="r", context=_context(x, y), actions=ACTIONS)
        )
        value = float(rng.random() < 0.3 + 0.1 * int(ranked.chosen_action_id[1:]))
        server.bandit.Reward(
            pb.RewardRequest(experiment="r", event_id=ranked.event_id, value=value)
        )


@pytest.mark.parametrize(
    "vw_args",
    [
        "--cb_explore_adf --bag 3",
        "--cb_explore_adf --cover 3 -q ::",
        "--cb_explore_adf --squarecb -q UA",
    ],
)
def test_learning_after_a_restart_matches_a_server_that_never_stopped(
    tmp_path: Path, vw_args: str
) -> None:
    """Learn, stop (checkpoint), restart, learn more: the model equals one trained on the whole
    log in one go, also for explorers whose checkpoints VW cannot resume exactly (--bag)."""
    data_dir = tmp_path / "data"
    server = ServerThread(data_dir).start()
    server.experiments.CreateExperiment(
        pb.CreateExperimentRequest(experiment=pb.Experiment(name="r", vw_args=vw_args))
    )
    _traffic(server, 200, seed=1)
    server.stop()
    assert list((data_dir / "models" / "r").glob("*.vw"))  # a checkpoint exists
    server = ServerThread(data_dir).start()
    try:
        _traffic(server, 200, seed=2)
        lines = list(iter_dsjson(data_dir, "r"))
        policy, matched, learned = replay(vw_args, lines)
        assert learned == 400 and matched == 400
        for x, y in ((0.1, -0.3), (1.2, 0.4), (-0.8, 2.0)):
            probe = server.bandit.Rank(
                pb.RankRequest(experiment="r", context=_context(x, y), actions=ACTIONS)
            )
            c = json.loads(lines[0])["c"]
            c["User"] = {"x": x, "y": y}
            expected = normalised(policy.predict_one(prediction_line(json.dumps(c))))
            assert {int(r.action_id[1:]): r.probability for r in probe.ranking} == expected
    finally:
        server.stop()
