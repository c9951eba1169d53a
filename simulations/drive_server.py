"""Drive a running bandit server with the segments environment and show its learning curve.

    make run                                  # in one terminal
    .venv/bin/python simulations/drive_server.py --events 6000

It creates (or reuses) an experiment, sends Rank then Reward for each simulated user, and prints
the share of best-variant choices and the click rate per window of events.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from tqdm import tqdm

from bandit_server.core.types import action_from_mapping, namespaces_from_mapping
from bandit_server.offline.environments import SegmentEnvironment
from bandit_server.rpc import converters
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2_grpc as pb_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port of the server")
    parser.add_argument("--experiment", default="segments-demo")
    parser.add_argument("--vw-args", default="--cb_explore_adf --squarecb -q UA")
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--window", type=int, default=500, help="events per curve point")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    channel = grpc.insecure_channel(args.target)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        print(f"no server at {args.target}; start one with `make run`", file=sys.stderr)
        return 2
    experiments = pb_grpc.ExperimentServiceStub(channel)
    bandit = pb_grpc.BanditServiceStub(channel)
    try:
        experiments.CreateExperiment(
            pb.CreateExperimentRequest(
                experiment=pb.Experiment(name=args.experiment, vw_args=args.vw_args)
            )
        )
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            return _failed(exc)
    try:
        _drive(args, bandit)
    except grpc.RpcError as exc:  # the server stopped or refused: say so, not a traceback
        return _failed(exc)
    return 0


def _failed(exc: grpc.RpcError) -> int:
    print(f"the server answered {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


def _drive(args: argparse.Namespace, bandit: pb_grpc.BanditServiceStub) -> None:
    env = SegmentEnvironment()
    actions = converters.action_messages(action_from_mapping(a) for a in env.actions())
    best = clicks = 0
    print(f"{'events':>8} {'best-variant share':>19} {'click rate':>11}")
    for round_ in tqdm(env.rounds(args.events, args.seed), total=args.events, unit="event"):
        context = converters.namespace_messages(namespaces_from_mapping(round_.context))
        response = bandit.Rank(
            pb.RankRequest(
                experiment=args.experiment,
                context=context,
                actions=actions,
            )
        )
        chosen = int(response.chosen_action_id[1:])
        reward = float(round_.rewards[chosen])
        bandit.Reward(
            pb.RewardRequest(experiment=args.experiment, event_id=response.event_id, value=reward)
        )
        best += chosen == round_.best_action
        clicks += int(reward)
        if (round_.index + 1) % args.window == 0:
            tqdm.write(
                f"{round_.index + 1:>8} {best / args.window:>19.3f} {clicks / args.window:>11.3f}"
            )
            best = clicks = 0
    rates_table = env.click_rates or ()
    oracle = sum(max(rates) for rates in rates_table) / env.n_segments
    print(f"oracle click rate {oracle:.3f}; uniform best-variant share {1 / env.n_variants:.3f}")


if __name__ == "__main__":
    sys.exit(main())
