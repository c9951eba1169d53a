"""Classification data sets as contextual bandits: actions are the classes, reward 1 if right.

Uses the small data sets that ship inside scikit-learn (`load_*`, nothing is downloaded).
scikit-learn is a development dependency, so it is imported only when a data set is loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bandit_server.core.types import FeatureValue
from bandit_server.errors import InvalidArgument, describe
from bandit_server.offline.environments.base import Round, check_positive, check_run

DATASETS = ("iris", "wine", "breast_cancer", "digits")
_DECIMALS = 4  # standardised features are rounded so logs stay short


def load_classification(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of one of DATASETS, labels as 0..n_classes-1."""
    if dataset not in DATASETS:
        raise InvalidArgument("dataset", f"{describe(dataset)} is not one of {DATASETS}")
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{dataset}")()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def standardise(x: np.ndarray) -> np.ndarray:
    """Columns at mean 0 and standard deviation 1; constant columns become 0."""
    sd = x.std(axis=0)
    return np.asarray(np.round((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0), _DECIMALS))


@dataclass(frozen=True)
class SupervisedEnvironment:
    """One of DATASETS as a bandit: context {"Features": {"x0": ...}} (standardised), one action
    per class {"Action": {"class": "c0"}}, reward 1 for the true class and 0 otherwise
    (deterministic, so `rewards` equal `expected_rewards`). Rounds are passes over the rows,
    each in a fresh seeded order; `info` holds the row, the label and the pass.
    """

    dataset: str
    seconds_between_rounds: float = 1.0
    _x: np.ndarray = field(init=False, repr=False, compare=False)
    _y: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_positive("seconds_between_rounds", self.seconds_between_rounds)
        x, y = load_classification(self.dataset)
        object.__setattr__(self, "_x", standardise(x))
        object.__setattr__(self, "_y", y)

    @property
    def name(self) -> str:
        return self.dataset

    @property
    def n_actions(self) -> int:
        return int(self._y.max()) + 1

    @property
    def n_samples(self) -> int:
        """Rows in one pass."""
        return len(self._y)

    @property
    def class_counts(self) -> tuple[int, ...]:
        """How many rows have each class, in class order."""
        return tuple(int(c) for c in np.bincount(self._y, minlength=self.n_actions))

    @property
    def best_constant_reward(self) -> float:
        """The average reward of always choosing the most frequent class, over whole passes."""
        return max(self.class_counts) / self.n_samples

    def actions(self) -> tuple[dict[str, Any], ...]:
        """The classes as plain-dict actions, in class order."""
        return tuple(
            {"id": f"c{c}", "features": {"Action": {"class": f"c{c}"}}}
            for c in range(self.n_actions)
        )

    def rounds(self, n: int, seed: int) -> Iterator[Round]:
        check_run(n, seed)
        rng = np.random.default_rng(seed)
        actions = self.actions()
        k = self.n_actions
        zeros = np.zeros(k)
        outcomes = np.eye(k)
        contexts = [
            {"Features": _features(row)} for row in self._x
        ]  # built once: every pass reuses them
        index = 0
        for pass_number in range(-(-n // self.n_samples)):
            for row in rng.permutation(self.n_samples).tolist():
                if index == n:
                    return
                label = int(self._y[row])
                yield Round(
                    index=index,
                    time=index * float(self.seconds_between_rounds),
                    context=contexts[row],
                    actions=actions,
                    expected_rewards=outcomes[label],
                    rewards=outcomes[label],
                    delays=zeros,
                    best_action=label,
                    info={"row": row, "label": label, "pass": pass_number},
                )
                index += 1


def _features(row: np.ndarray) -> dict[str, FeatureValue]:
    return {f"x{j}": float(value) for j, value in enumerate(row.tolist())}
