"""kill -9 mid-traffic: nothing acknowledged is lost and the model is the log's, exactly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

from bandit_server.core.dsjson import prediction_line
from bandit_server.export import iter_dsjson
from bandit_server.offline.environments import SegmentEnvironment
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2_grpc as pb_grpc
from bandit_server.rpc.server import free_port
from tests.helpers import normalised, replay
from tests.server import actions_pb, namespaces_pb

VW_ARGS = "--cb_explore_adf --epsilon 0.1 -q UA"


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BANDIT_CHECKPOINT_INTERVAL_SECONDS": "0.3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bandit_server", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    channel.close()
    return process


def test_sigkill_mid_traffic_loses_nothing_acknowledged_and_model_matches_log(
    tmp_path: Path,
) -> None:
    """After SIGKILL and restart, every acknowledged decision and reward is in the log, and the
    served probabilities equal a never-interrupted VW trained on the learned log."""
    data_dir, port = tmp_path / "data", free_port()
    server = _start(data_dir, port)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    experiments = pb_grpc.ExperimentServiceStub(channel)
    bandit = pb_grpc.BanditServiceStub(channel)
    experiments.CreateExperiment(
        pb.CreateExperimentRequest(experiment=pb.Experiment(name="crash", vw_args=VW_ARGS))
    )
    env = SegmentEnvironment()
    actions = actions_pb(env.actions())
    acked_decisions: dict[str, tuple[str, tuple[float, ...]]] = {}
    acked_rewards: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def traffic(worker: int) -> None:
        for round_ in env.rounds(100_000, seed=worker):
            if stop.is_set():
                return
            try:
                event_id = f"w{worker}-{round_.index}"
                response = bandit.Rank(
                    pb.RankRequest(
                        experiment="crash", event_id=event_id,
                        context=namespaces_pb(round_.context), actions=actions,
                    )
                )  # fmt: skip
                with lock:
                    acked_decisions[event_id] = (
                        response.chosen_action_id,
                        tuple(r.probability for r in response.ranking),
                    )
                value = float(round_.rewards[int(response.chosen_action_id[1:])])
                bandit.Reward(pb.RewardRequest(experiment="crash", event_id=event_id, value=value))
                with lock:
                    acked_rewards[event_id] = value
            except grpc.RpcError:
                return  # the server died under us: this call was not acknowledged

    workers = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acked_rewards) < 1500 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.send_signal(signal.SIGKILL)  # mid-traffic: workers are still calling
    server.wait(timeout=30)
    stop.set()
    for w in workers:
        w.join(timeout=30)
    channel.close()
    assert len(acked_rewards) >= 1500

    server = _start(data_dir, port)
    try:
        with sqlite3.connect(data_dir / "decisions.sqlite3") as db:
            logged = {
                event_id: (ids, ranking, probs)
                for event_id, ids, ranking, probs in db.execute(
                    "SELECT event_id, action_ids, ranking, probabilities FROM decisions"
                )
            }
            rewards = dict(db.execute("SELECT event_id, value FROM rewards"))
        for event_id, (chosen, probabilities) in acked_decisions.items():
            ids, ranking, probs = logged[event_id]
            assert json.loads(ids)[json.loads(ranking)[0]] == chosen
            assert tuple(json.loads(probs)) == probabilities
        for event_id, value in acked_rewards.items():
            assert rewards[event_id] == value

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        bandit = pb_grpc.BanditServiceStub(channel)
        lines = list(iter_dsjson(data_dir, "crash"))
        policy, _matched, learned = replay(VW_ARGS, lines)
        assert learned >= len(acked_rewards)
        for segment in ("s0", "s1", "s2"):
            response = bandit.Rank(
                pb.RankRequest(
                    experiment="crash", context=namespaces_pb({"User": {"segment": segment}}),
                    actions=actions,
                )
            )  # fmt: skip
            c = json.loads(lines[0])["c"]
            c["User"] = {"segment": segment}
            expected = normalised(policy.predict_one(prediction_line(json.dumps(c))))
            served = {int(r.action_id[1:]): r.probability for r in response.ranking}
            assert served == expected
        channel.close()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    # SIGTERM drained and checkpointed: the newest checkpoint covers every learned event.
    with sqlite3.connect(data_dir / "decisions.sqlite3") as db:
        last_seq = db.execute("SELECT MAX(seq) FROM learned").fetchone()[0]
    newest = sorted((data_dir / "models" / "crash").glob("*.json"))[-1]
    assert json.loads(newest.read_text())["learned_seq"] == last_seq
