"""Compare VW's exploration methods on the synthetic environment, with known regret.

    .venv/bin/python simulations/compare_exploration.py
    .venv/bin/python simulations/compare_exploration.py --reward logistic --drift-at 3000
    .venv/bin/python simulations/compare_exploration.py --delay-mean 20 --out trace.csv

Every policy faces the same rounds (contexts, reward draws and sampler uniforms). The table
shows average reward, regret against the best action and the share of best choices over the
last rounds, then the totals over the whole run.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from bandit_server.errors import InvalidArgument
from bandit_server.offline.environments import SyntheticEnvironment
from bandit_server.offline.simulate import PolicySpec, compare, summarize

# (label, exploration options); the context x action interactions are added per environment.
EXPLORATION = (
    ("epsilon-greedy 0.05", "--epsilon 0.05"),
    ("squarecb", "--squarecb"),
    ("squarecb elim", "--squarecb --elim"),
    ("cover 3", "--cover 3"),
    ("bag 5", "--bag 5"),
    ("softmax 10", "--softmax --lambda 10"),
)


def policies(env: SyntheticEnvironment) -> list[PolicySpec]:
    interactions = " ".join(f"-q {ns.name[0]}A" for ns in env.context)
    learners = [
        PolicySpec(f"--cb_explore_adf {options} {interactions}", label)
        for label, options in EXPLORATION
    ]
    return [PolicySpec("uniform"), PolicySpec("oracle"), *learners]


def table(trace: pd.DataFrame, last: int, window: str, totals: bool = True) -> str:
    summary = summarize(trace, last=last)
    columns = {
        "avg_reward": f"reward({window})",
        "avg_regret": f"regret({window})",
        "best_share": f"best%({window})",
    }
    if totals:
        columns |= {"total_reward": "total reward", "total_regret": "total regret"}
    shown = summary[list(columns)].rename(columns=columns)
    shown[f"best%({window})"] *= 100
    return str(shown.to_string(float_format=lambda x: f"{x:.3f}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0, help="run seed (contexts, draws, sampling)")
    parser.add_argument("--instance-seed", type=int, default=0, help="which problem instance")
    parser.add_argument("--reward", choices=("linear", "logistic", "interaction"), default="linear")
    parser.add_argument("--actions", type=int, default=5)
    parser.add_argument("--noise", type=float, default=None, help="default 0.1; 0 for logistic")
    parser.add_argument("--drift-at", type=int, default=None, help="round where rewards change")
    parser.add_argument("--delay-mean", type=float, default=0.0, help="exponential reward delays")
    parser.add_argument("--last", type=int, default=1000, help="window for the averages")
    parser.add_argument("--out", help="write the per-round trace as CSV here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    noise = args.noise if args.noise is not None else (0.0 if args.reward == "logistic" else 0.1)
    try:
        env = SyntheticEnvironment(
            n_actions=args.actions,
            reward=args.reward,
            noise=noise,
            drift_at=args.drift_at,
            delay="exponential" if args.delay_mean > 0 else "none",
            delay_mean=args.delay_mean,
            instance_seed=args.instance_seed,
        )
        trace = compare(env, policies(env), args.rounds, args.seed, not args.no_progress)
        print(f"{env.name}: {args.rounds} rounds, seed {args.seed}, noise {noise}")
        print(table(trace, args.last, f"last {args.last}"))
        if args.drift_at is not None and args.drift_at < args.rounds:
            window = min(args.last, args.rounds - args.drift_at)
            after = trace[trace["round"].between(args.drift_at, args.drift_at + window - 1)]
            label = f"rounds {args.drift_at}-{args.drift_at + window - 1}"
            print(f"\nRight after the drift at round {args.drift_at}:")
            print(table(after, window, label, totals=False))
    except InvalidArgument as exc:
        parser.error(str(exc))
    if args.out:
        trace.to_csv(args.out, index=False)
        print(f"\nwrote {len(trace)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
