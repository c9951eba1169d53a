"""The whole loop over real gRPC: Rank and Reward on loopback learn the best variant per segment."""

from __future__ import annotations

import json

from bandit_server.core.dsjson import prediction_line
from bandit_server.export import iter_dsjson
from bandit_server.offline.environments import SegmentEnvironment
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from tests.helpers import normalised, replay
from tests.server import ServerThread, actions_pb, namespaces_pb

VW_ARGS = "--cb_explore_adf --squarecb -q UA"


def test_service_learns_each_segments_best_variant_and_export_replays_exactly(
    server: ServerThread,
) -> None:
    """6,000 events through Rank/Reward: the last 1,000 pick the best variant >= 80% of the time,
    and a fresh VW trained on the exported log reproduces every served distribution exactly."""
    server.experiments.CreateExperiment(
        pb.CreateExperimentRequest(experiment=pb.Experiment(name="segments", vw_args=VW_ARGS))
    )
    env = SegmentEnvironment()
    actions = actions_pb(env.actions())
    best_in_tail = 0
    for round_ in env.rounds(6000, seed=7):
        response = server.bandit.Rank(
            pb.RankRequest(
                experiment="segments", context=namespaces_pb(round_.context), actions=actions
            )
        )
        chosen = int(response.chosen_action_id[1:])
        server.bandit.Reward(
            pb.RewardRequest(
                experiment="segments",
                event_id=response.event_id,
                value=float(round_.rewards[chosen]),
            )
        )
        if round_.index >= 5000:
            best_in_tail += chosen == round_.best_action
    uniform_share = 1 / env.n_variants
    assert best_in_tail / 1000 >= 0.80, best_in_tail
    assert best_in_tail / 1000 > 3 * uniform_share

    lines = list(iter_dsjson(server.settings.data_dir, "segments"))
    assert len(lines) == 6000
    policy, matched, learned = replay(VW_ARGS, lines)
    assert learned == 6000
    assert matched == 6000  # every served distribution, bit for bit
    # The live model is the replayed one: same prediction on a fresh context.
    probe = server.bandit.Rank(
        pb.RankRequest(
            experiment="segments",
            context=namespaces_pb({"User": {"segment": "s1"}}),
            actions=actions,
        )
    )
    c_json = json.loads(lines[0])["c"]
    c_json["User"] = {"segment": "s1"}
    offline = normalised(
        policy.predict_one(prediction_line(json.dumps(c_json, separators=(",", ":"))))
    )
    served = {int(r.action_id[1:]): r.probability for r in probe.ranking}
    assert served == offline
