"""Classification data sets as bandits: exact baselines from class counts, and learnability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bandit_server.errors import InvalidArgument
from bandit_server.offline.environments import DATASETS, SupervisedEnvironment
from bandit_server.offline.simulate import compare, simulate

EXPECTED_COUNTS = {
    "iris": (50, 50, 50),
    "wine": (59, 71, 48),
    "breast_cancer": (212, 357),
    "digits": (178, 182, 177, 183, 181, 182, 181, 179, 174, 180),
}


@pytest.mark.parametrize("dataset", DATASETS)
def test_classes_features_and_rewards(dataset: str) -> None:
    """Actions are the classes, features are standardised, and only the true class pays 1."""
    env = SupervisedEnvironment(dataset)
    assert env.class_counts == EXPECTED_COUNTS[dataset]
    assert env.n_actions == len(env.class_counts)
    assert env.n_samples == sum(env.class_counts)
    rounds = list(env.rounds(env.n_samples, seed=0))
    features = np.array([list(r.context["Features"].values()) for r in rounds])
    assert np.all(np.abs(features.mean(axis=0)) < 1e-3)
    assert np.all((np.abs(features.std(axis=0) - 1) < 1e-3) | (features.std(axis=0) == 0))
    for r in rounds:
        assert r.rewards.tolist() == r.expected_rewards.tolist()
        assert r.rewards.sum() == 1.0 and r.rewards[r.best_action] == 1.0
        assert r.best_action == r.info["label"]
    assert rounds[0].actions[0] == {"id": "c0", "features": {"Action": {"class": "c0"}}}


def test_each_pass_visits_every_row_once_in_a_fresh_seeded_order() -> None:
    """Rounds are whole shuffled passes over the rows, a new order per pass, fixed by the seed."""
    env = SupervisedEnvironment("iris")
    rows = [r.info["row"] for r in env.rounds(3 * 150 + 10, seed=4)]
    passes = [rows[i * 150 : (i + 1) * 150] for i in range(3)]
    assert all(sorted(p) == list(range(150)) for p in passes)
    assert passes[0] != passes[1] != passes[2]
    assert rows == [r.info["row"] for r in env.rounds(460, seed=4)]
    assert rows != [r.info["row"] for r in env.rounds(460, seed=5)]
    assert [r.info["pass"] for r in env.rounds(460, seed=4)][-10:] == [3] * 10


@pytest.mark.parametrize("dataset", DATASETS)
def test_best_constant_action_earns_exactly_the_majority_share(dataset: str) -> None:
    """Always choosing the most frequent class earns exactly max(class counts) / n per pass."""
    env = SupervisedEnvironment(dataset)
    majority = int(np.argmax(env.class_counts))
    trace = pd.DataFrame(simulate(env, f"constant:{majority}", env.n_samples, seed=1))
    assert trace["reward"].sum() == max(env.class_counts)
    assert (
        trace["reward"].mean() == env.best_constant_reward == max(env.class_counts) / env.n_samples
    )
    # The most frequent class is also the best constant in hindsight: no other does better.
    for action in range(env.n_actions):
        total = pd.DataFrame(simulate(env, f"constant:{action}", env.n_samples, 1))["reward"].sum()
        assert total == env.class_counts[action]


@pytest.mark.parametrize("dataset", ["iris", "wine", "breast_cancer"])
def test_a_learning_vw_policy_beats_the_best_constant_action(dataset: str) -> None:
    """epsilon-greedy VW with -q FA, over 3 passes, earns well above the best constant action
    on the last pass (exploration included)."""
    env = SupervisedEnvironment(dataset)
    args = "--cb_explore_adf --epsilon 0.05 -q FA"
    trace = compare(env, [args], 3 * env.n_samples, seed=0, progress=False)
    last_pass = trace["reward"].tail(env.n_samples).mean()
    assert last_pass > env.best_constant_reward + 0.2, last_pass


def test_unknown_dataset_is_rejected() -> None:
    """A data set not shipped with scikit-learn raises InvalidArgument naming it."""
    with pytest.raises(InvalidArgument, match=r"^dataset: 'mnist' is not one of"):
        SupervisedEnvironment("mnist")
    with pytest.raises(InvalidArgument, match=r"^seconds_between_rounds: "):
        SupervisedEnvironment("iris", seconds_between_rounds=0.0)
