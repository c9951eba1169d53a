"""Counterfactual evaluation: replay candidates over a log and estimate each one's value.

The table follows Personalizer's offline evaluation: per policy, its estimated reward with an
interval, and its difference to the logged (online) policy with the difference's own, paired
interval. Only events with a reward enter estimates; `_skipLearn` events are replayed and counted.

DM, DR and SNDR use a reward model that is never fitted on the event it predicts: the
progressive predictions of a VW `--cb_adf` regressor (see `replay.reward_model`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bandit_server.errors import InvalidArgument, describe
from bandit_server.learners.vw import validate_cost_model_args
from bandit_server.offline.dataset import FloatArray, LoggedDataset
from bandit_server.offline.estimators import INTERVALS, estimate
from bandit_server.offline.paired import (
    ESTIMATORS,
    PAIRED_INTERVALS,
    Arms,
    cumulative_curve,
    estimator_named,
    paired_difference,
)
from bandit_server.offline.replay import (
    DEFAULT_REWARD_MODEL_ARGS,
    Candidate,
    ConstantAction,
    FirstAction,
    LoggedPolicy,
    Replay,
    UniformRandom,
    VWLearner,
    replay,
    reward_model,
)

ESTIMATOR_NAMES = tuple(ESTIMATORS)
ORDERS = ("file", "time")


@dataclass(frozen=True)
class EvaluationSettings:
    """How to estimate. The first estimator is the primary one: it ranks policies, draws the
    curves and decides recommendations. `interval` is one of `estimators.INTERVALS`; paired
    differences use it when it is "wald" or "bootstrap", else the bootstrap (the finite-sample
    "betting" interval bounds importance-weighted rewards, not differences of them).
    `reward_range=None` takes [min(0, min reward), max(1, max reward)] from the log."""

    estimators: tuple[str, ...] = ("DR", "IPS", "SNIPS")
    interval: str = "wald"
    alpha: float = 0.05
    n_bootstrap: int = 1000
    seed: int = 0
    reward_range: tuple[float, float] | None = None
    reward_model_args: str = DEFAULT_REWARD_MODEL_ARGS
    order: str = "file"

    def __post_init__(self) -> None:
        if not self.estimators:
            raise InvalidArgument("estimators", "no estimator given")
        seen: set[str] = set()
        for i, name in enumerate(self.estimators):
            if name not in ESTIMATOR_NAMES:
                raise InvalidArgument(
                    f"estimators[{i}]", f"{describe(name)} is not one of {ESTIMATOR_NAMES}"
                )
            if name in seen:
                raise InvalidArgument(f"estimators[{i}]", f"{name!r} is listed twice")
            seen.add(name)
        if self.interval not in INTERVALS:
            raise InvalidArgument(
                "interval", f"{describe(self.interval)} is not one of {INTERVALS}"
            )
        if not 0.0 < self.alpha < 1.0:
            raise InvalidArgument("alpha", f"{self.alpha!r} is not in (0, 1)")
        if self.n_bootstrap < 1:
            raise InvalidArgument("n_bootstrap", f"{self.n_bootstrap!r} must be >= 1")
        if self.reward_range is not None:
            low, high = self.reward_range
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise InvalidArgument("reward_range", f"{self.reward_range!r} is not low < high")
        if self.order not in ORDERS:
            raise InvalidArgument("order", f"{self.order!r} is not one of {ORDERS}")
        object.__setattr__(
            self,
            "reward_model_args",
            validate_cost_model_args(self.reward_model_args, isolate=True),
        )

    @property
    def primary(self) -> str:
        return self.estimators[0]

    @property
    def difference_interval(self) -> str:
        return self.interval if self.interval in PAIRED_INTERVALS else "bootstrap"

    @property
    def needs_reward_model(self) -> bool:
        return any(estimator_named(name).uses_reward_model for name in self.estimators)

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimators": list(self.estimators),
            "primary": self.primary,
            "interval": self.interval,
            "difference_interval": self.difference_interval,
            "alpha": self.alpha,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "reward_range": None if self.reward_range is None else list(self.reward_range),
            "reward_model_args": self.reward_model_args if self.needs_reward_model else None,
            "order": self.order,
        }


@dataclass(frozen=True, slots=True)
class PolicyEstimate:
    """One row of the table: a policy's value under one estimator, its paired difference to the
    logged policy, and overlap diagnostics (from `estimators.diagnostics`)."""

    policy: str
    kind: str
    args: str
    estimator: str
    value: float
    lower: float
    upper: float
    difference: float
    difference_lower: float
    difference_upper: float
    ess: float
    ess_share: float
    mean_weight: float
    max_weight: float
    zero_support_share: float


@dataclass(frozen=True)
class Evaluation:
    """Estimates for every candidate (rows: policy x estimator, in candidate order) and the
    cumulative value curve of each candidate under the primary estimator."""

    source: str
    n_events: int
    n_skipped: int
    n_estimated: int
    settings: EvaluationSettings
    reward_range: tuple[float, float]
    reference: str
    rows: tuple[PolicyEstimate, ...]
    curves: dict[str, FloatArray]
    warnings: tuple[str, ...]
    estimator_details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Policy names in candidate order."""
        return list(dict.fromkeys(row.policy for row in self.rows))

    def table(self, estimator: str | None = None) -> list[PolicyEstimate]:
        """The rows of one estimator (default: the primary), in candidate order."""
        name = estimator or self.settings.primary
        return [row for row in self.rows if row.estimator == name]

    def row(self, policy: str, estimator: str | None = None) -> PolicyEstimate:
        for row in self.table(estimator):
            if row.policy == policy:
                return row
        raise InvalidArgument("policy", f"{policy!r} was not evaluated")


def kind_of(candidate: Candidate) -> str:
    kinds: dict[type[Any], str] = {
        VWLearner: "vw",
        LoggedPolicy: "logged",
        FirstAction: "baseline",
        UniformRandom: "uniform",
        ConstantAction: "constant",
    }
    return kinds[type(candidate)]


def prepare(dataset: LoggedDataset, settings: EvaluationSettings) -> LoggedDataset:
    """The dataset in the order the settings ask for."""
    return dataset.sorted_by_time() if settings.order == "time" else dataset


def with_reference(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates, with the logged policy first if it is not among them."""
    out = list(candidates)
    if not any(isinstance(c, LoggedPolicy) for c in out):
        out.insert(0, LoggedPolicy())
    return out


def infer_reward_range(dataset: LoggedDataset) -> tuple[float, float]:
    rewards = dataset.rewards[dataset.learnable]
    if len(rewards) == 0:
        raise InvalidArgument("log", f"{dataset.source}: no event has a reward")
    return (min(0.0, float(rewards.min())), max(1.0, float(rewards.max())))


def evaluate(
    dataset: LoggedDataset,
    candidates: Sequence[Candidate],
    settings: EvaluationSettings | None = None,
    *,
    progress: bool = True,
    replayed: Replay | None = None,
    rewards_model: FloatArray | None = None,
    workers: int = 1,
) -> Evaluation:
    """Replay `candidates` (the logged policy is added as the reference if absent) over
    `dataset` and estimate each one. `replayed`/`rewards_model` reuse earlier work on the same
    dataset in the same order; `workers` > 1 replays VW candidates in parallel processes."""
    settings = settings or EvaluationSettings()
    data = prepare(dataset, settings)
    chosen = with_reference(candidates)
    reward_range = settings.reward_range or infer_reward_range(data)
    if replayed is None:
        replayed = replay(data, chosen, progress=progress, workers=workers)
    if rewards_model is None and settings.needs_reward_model:
        rewards_model = reward_model(
            data, settings.reward_model_args, reward_range=reward_range, progress=progress
        )
    mask = data.learnable
    arms = Arms(
        rewards=data.rewards[mask],
        actions=data.actions[mask],
        propensities=data.propensities[mask],
        reward_model=None if rewards_model is None else rewards_model[mask],
    )
    reference = next(c for c in chosen if isinstance(c, LoggedPolicy)).name
    reference_pmf = replayed.pmfs[reference][mask]
    logged_pmf = data.logged_pmf[mask]
    rows: list[PolicyEstimate] = []
    curves: dict[str, FloatArray] = {}
    details: dict[str, dict[str, Any]] = {}
    warnings = list(data.warnings)
    for candidate in chosen:
        pmf = replayed.pmfs[candidate.name][mask]
        for name in settings.estimators:
            estimator = estimator_named(name)
            result = estimate(
                estimator,
                arms.rewards,
                arms.actions,
                arms.propensities,
                pmf,
                arms.reward_model if estimator.uses_reward_model else None,
                interval=settings.interval,
                alpha=settings.alpha,
                n_bootstrap=settings.n_bootstrap,
                seed=settings.seed,
                reward_range=reward_range,
                logged_pmf=logged_pmf,
            )
            details[f"{candidate.name} | {name}"] = result.to_dict()
            diff = paired_difference(
                arms.terms(estimator, pmf),
                arms.terms(estimator, reference_pmf),
                interval=settings.difference_interval,
                alpha=settings.alpha,
                n_bootstrap=settings.n_bootstrap,
                seed=settings.seed,
            )
            overlap = result.diagnostics
            rows.append(
                PolicyEstimate(
                    policy=candidate.name,
                    kind=kind_of(candidate),
                    args=candidate.args if isinstance(candidate, VWLearner) else "",
                    estimator=name,
                    value=float(result.value),
                    lower=float(result.lower),
                    upper=float(result.upper),
                    difference=diff.value,
                    difference_lower=diff.lower,
                    difference_upper=diff.upper,
                    ess=overlap.effective_sample_size,
                    ess_share=overlap.effective_sample_size / overlap.n,
                    mean_weight=overlap.mean_weight,
                    max_weight=overlap.max_weight,
                    zero_support_share=overlap.zero_support_share,
                )
            )
        # The weights, hence the overlap warnings, are the same under every estimator.
        warnings.extend(f"{candidate.name}: {text}" for text in overlap.warnings)
        primary = estimator_named(settings.primary)
        curves[candidate.name] = cumulative_curve(arms.terms(primary, pmf))
    return Evaluation(
        source=data.source,
        n_events=len(data),
        n_skipped=data.n_skipped,
        n_estimated=int(mask.sum()),
        settings=settings,
        reward_range=reward_range,
        reference=reference,
        rows=tuple(rows),
        curves=curves,
        warnings=tuple(warnings),
        estimator_details=details,
    )
