"""scikit-learn's classification data sets as contextual bandits: VW against exact baselines.

    .venv/bin/python simulations/supervised_bandits.py
    .venv/bin/python simulations/supervised_bandits.py --datasets iris wine --passes 5

Each round shows one row's standardised features; the policy picks a class and earns 1 if it
is the row's class. The best constant action's reward is exact from the class counts; uniform's
expectation is 1/classes. Rounds are shuffled passes over the data, the same for every policy.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from bandit_server.errors import InvalidArgument
from bandit_server.offline.environments import DATASETS, SupervisedEnvironment
from bandit_server.offline.simulate import PolicySpec, compare

# (label, VW options); "Features" x "Action" interactions let each class weigh the features.
VW_POLICIES = (
    ("epsilon-greedy 0.05", "--cb_explore_adf --epsilon 0.05 -q FA"),
    ("squarecb", "--cb_explore_adf --squarecb -q FA"),
    ("bag 5", "--cb_explore_adf --bag 5 -q FA"),
    ("cover 3", "--cb_explore_adf --cover 3 -q FA"),
)


def run(dataset: str, passes: int, seed: int, progress: bool) -> pd.DataFrame:
    env = SupervisedEnvironment(dataset)
    majority = max(range(env.n_actions), key=lambda c: env.class_counts[c])
    policies = [
        PolicySpec(f"constant:{majority}", "best constant"),
        PolicySpec("uniform"),
        *(PolicySpec(args, label) for label, args in VW_POLICIES),
    ]
    trace = compare(env, policies, passes * env.n_samples, seed, progress)
    last = trace.groupby("policy", sort=False).tail(env.n_samples).groupby("policy", sort=False)
    whole = trace.groupby("policy", sort=False)
    table = pd.DataFrame(
        {
            "reward(last pass)": last["reward"].mean(),
            "reward(all)": whole["reward"].mean(),
        }
    )
    print(
        f"{dataset}: {env.n_samples} rows, {env.n_actions} classes {env.class_counts}, "
        f"{passes} passes; best constant = {max(env.class_counts)}/{env.n_samples} "
        f"= {env.best_constant_reward:.4f}, uniform expects {1 / env.n_actions:.4f}"
    )
    print(table.to_string(float_format=lambda x: f"{x:.4f}"))
    print()
    return trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--passes", type=int, default=3, help="shuffled passes over each data set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the per-round traces as CSV here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.passes < 1:
        parser.error(f"--passes: {args.passes} is not >= 1")
    traces = []
    try:
        for dataset in args.datasets:
            trace = run(dataset, args.passes, args.seed, not args.no_progress)
            traces.append(trace.assign(dataset=dataset))
    except InvalidArgument as exc:
        parser.error(str(exc))
    if args.out:
        combined = pd.concat(traces, ignore_index=True)
        combined.to_csv(args.out, index=False)
        print(f"wrote {len(combined)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
