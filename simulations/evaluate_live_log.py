"""Counterfactual evaluation of a log produced by a live server run.

    .venv/bin/python simulations/evaluate_live_log.py --events 4000 --report live.html

Starts a server (its own data directory, a free loopback port), serves the segments audience
with an exploratory logging policy, stops the server with SIGTERM, then asks "what would these
other policies have earned on that traffic?" through `bandit-server evaluate --data-dir`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
from tqdm import tqdm

from bandit_server.cli import main as cli_main
from bandit_server.core.types import action_from_mapping, namespaces_from_mapping
from bandit_server.offline.environments import SegmentEnvironment
from bandit_server.rpc import converters
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2_grpc as pb_grpc
from bandit_server.rpc.server import free_port

CANDIDATES = (
    "--cb_explore_adf --squarecb -q UA",
    "--cb_explore_adf --epsilon 0.05 -q UA",
    "--cb_explore_adf --epsilon 0.05",  # no interactions: cannot tell segments apart
)


def drive(data_dir: Path, events: int, logging_policy: str, seed: int) -> None:
    """Run a server on `data_dir`, send `events` Rank/Reward pairs, stop it cleanly."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bandit_server", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--log-level", "warning"],
        env=os.environ.copy(),
    )  # fmt: skip
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        pb_grpc.ExperimentServiceStub(channel).CreateExperiment(
            pb.CreateExperimentRequest(
                experiment=pb.Experiment(name="live", vw_args=logging_policy)
            )
        )
        bandit = pb_grpc.BanditServiceStub(channel)
        env = SegmentEnvironment()
        actions = converters.action_messages(action_from_mapping(a) for a in env.actions())
        for round_ in tqdm(env.rounds(events, seed), total=events, unit="event", desc="serving"):
            context = converters.namespace_messages(namespaces_from_mapping(round_.context))
            ranked = bandit.Rank(
                pb.RankRequest(
                    experiment="live",
                    context=context,
                    actions=actions,
                )
            )
            reward = float(round_.rewards[int(ranked.chosen_action_id[1:])])
            bandit.Reward(
                pb.RewardRequest(experiment="live", event_id=ranked.event_id, value=reward)
            )
        channel.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--logging-policy", default="--cb_explore_adf --epsilon 0.3 -q UA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    parser.add_argument("--report", type=Path, help="write the HTML report here")
    parser.add_argument("--json", type=Path, help="write the JSON result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        drive(data_dir, args.events, args.logging_policy, args.seed)
        command = ["evaluate", "--data-dir", str(data_dir), "--experiment", "live", "--baselines"]
        for policy in CANDIDATES:
            command += ["--policy", policy]
        if args.report:
            command += ["--report", str(args.report)]
        if args.json:
            command += ["--json", str(args.json)]
        return cli_main(command)


if __name__ == "__main__":
    sys.exit(main())
