"""Off-policy estimators of a target policy's value from logged bandit data, with intervals.

Inputs are numpy arrays over n logged events and k actions (ragged action sets padded to k with
target probability 0): `rewards` (n,), `actions` (n,) logged 0-based action indices,
`propensities` (n,) the logged probability of each logged action, `target_pmf` (n, k) the target
policy's distribution per event and, for model-based estimators, `reward_model` (n, k) predicted
rewards. Notation: w_i = pi(a_i|x_i) / p_i, q_i(a) = reward_model[i, a],
DM_i = sum_a pi(a|x_i) q_i(a). Definitions follow the standard ones (as in obp's `ope.estimators`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from bandit_server.errors import InvalidArgument, describe
from bandit_server.offline import intervals
from bandit_server.offline.diagnostics import Diagnostics, diagnose, diagnostics
from bandit_server.offline.estimator_base import (
    Estimator,
    capped,
    check_cap,
    check_count,
    named,
)
from bandit_server.offline.estimator_inputs import (
    FloatArray,
    LoggedData,
    check_alpha,
    check_reward_range,
    check_rewards_within,
)
from bandit_server.offline.intervals import INTERVALS, Terms

__all__ = [
    "ALL_ESTIMATORS",
    "DM",
    "DR",
    "INTERVALS",
    "IPS",
    "SNDR",
    "SNIPS",
    "Diagnostics",
    "Estimate",
    "Estimator",
    "SwitchDR",
    "Terms",
    "diagnostics",
    "estimate",
]


@dataclass(frozen=True)
class IPS(Estimator):
    """Inverse propensity scoring: mean of w_i r_i. Unbiased when the logger covers the target.

    `clip` caps each weight (None: no cap); capping trades variance for a downward bias with
    non-negative rewards.
    """

    clip: float | None = None

    def __post_init__(self) -> None:
        check_cap("clip", self.clip)

    @property
    def name(self) -> str:
        return named("ips", clip=self.clip)

    def _terms(self, data: LoggedData) -> Terms:
        return Terms(direct=capped(data.weights, self.clip) * data.rewards)

    def _bet_weights(self, data: LoggedData) -> FloatArray | None:
        return capped(data.weights, self.clip)


@dataclass(frozen=True)
class SNIPS(Estimator):
    """Self-normalised IPS: sum w_i r_i / sum w_i. Slightly biased, stays within the reward range,
    often much less variable than IPS."""

    @property
    def name(self) -> str:
        return "snips"

    def _terms(self, data: LoggedData) -> Terms:
        return Terms(direct=None, weighted=data.weights * data.rewards, weights=data.weights)

    def _bet_weights(self, data: LoggedData) -> FloatArray | None:
        return data.weights


@dataclass(frozen=True)
class DM(Estimator):
    """Direct method: mean of DM_i = sum_a pi(a|x_i) q_i(a). Ignores rewards and propensities;
    as good as the reward model. Its intervals reflect only the spread over events, not the
    model's bias (which is large when, say, the target is greedy on that same model)."""

    uses_reward_model: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "dm"

    def _terms(self, data: LoggedData) -> Terms:
        return Terms(direct=_direct(data))


@dataclass(frozen=True)
class DR(Estimator):
    """Doubly robust: mean of DM_i + w_i (r_i - q_i(a_i)). Unbiased when the logger covers the
    target (whatever the model); less variable than IPS when the model is good.

    `clip` caps each weight (None: no cap).
    """

    uses_reward_model: ClassVar[bool] = True
    clip: float | None = None

    def __post_init__(self) -> None:
        check_cap("clip", self.clip)

    @property
    def name(self) -> str:
        return named("dr", clip=self.clip)

    def _terms(self, data: LoggedData) -> Terms:
        w = capped(data.weights, self.clip)
        return Terms(direct=_direct(data) + w * _residuals(data))


@dataclass(frozen=True)
class SNDR(Estimator):
    """Self-normalised doubly robust: mean(DM_i) + sum w_i (r_i - q_i(a_i)) / sum w_i."""

    uses_reward_model: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "sndr"

    def _terms(self, data: LoggedData) -> Terms:
        w = data.weights
        return Terms(direct=_direct(data), weighted=w * _residuals(data), weights=w)


@dataclass(frozen=True)
class SwitchDR(Estimator):
    """Switch doubly robust (Wang, Agarwal & Dudik 2017, as defined in obp): mean of
    DM_i + 1[w_i <= tau] w_i (r_i - q_i(a_i)). Events whose weight exceeds `tau` contribute only
    the model's prediction, trading their variance for model bias; tau = inf is DR.

    The default tau = 10 drops the correction where the target is over 10x likelier than the
    logger to take the logged action; tune it to your data.
    """

    uses_reward_model: ClassVar[bool] = True
    tau: float = 10.0

    def __post_init__(self) -> None:
        check_cap("tau", self.tau, allow_none=False)

    @property
    def name(self) -> str:
        return named("switch_dr", tau=None if self.tau == 10.0 else self.tau)

    def _terms(self, data: LoggedData) -> Terms:
        w = np.where(data.weights <= self.tau, data.weights, 0.0)
        return Terms(direct=_direct(data) + w * _residuals(data))


ALL_ESTIMATORS: tuple[Estimator, ...] = (IPS(), SNIPS(), DM(), DR(), SNDR(), SwitchDR())


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a (1 - alpha) interval [lower, upper] and overlap diagnostics."""

    estimator: str
    value: float
    lower: float
    upper: float
    interval: str
    alpha: float
    n: int
    diagnostics: Diagnostics

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values, diagnostics nested."""
        out = asdict(self)
        out["diagnostics"] = self.diagnostics.to_dict()
        return out


def estimate(
    estimator: Estimator,
    rewards: npt.ArrayLike,
    actions: npt.ArrayLike,
    propensities: npt.ArrayLike,
    target_pmf: npt.ArrayLike,
    reward_model: npt.ArrayLike | None = None,
    *,
    interval: str = "wald",
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
    reward_range: tuple[float, float] = (0.0, 1.0),
    logged_pmf: npt.ArrayLike | None = None,
) -> Estimate:
    """Estimate the target policy's value with a (1 - alpha) confidence interval.

    interval:
    - "wald": Gaussian, estimate ± z · sd / sqrt(n); self-normalised estimators by the delta
      method. Asymptotic: needs a reasonable effective sample size.
    - "bootstrap": percentile interval over `n_bootstrap` resamples of the events, seeded by
      `seed` (same seed, same interval); ratio estimators are recomputed as ratios per resample.
    - "betting": finite-sample interval for IPS and SNIPS, valid for any n when rewards lie in
      `reward_range` and the propensities are the true probabilities of the logged actions
      (see `intervals.betting`). Conservative; ignores `n_bootstrap` and `seed`.
    `logged_pmf` (n, k), the logger's full distributions, only feeds the diagnostics.
    """
    if not isinstance(estimator, Estimator):
        raise InvalidArgument("estimator", f"must be an Estimator, got {describe(estimator)}")
    if interval not in INTERVALS:
        raise InvalidArgument("interval", f"must be one of {INTERVALS}, got {describe(interval)}")
    alpha = check_alpha(alpha)
    bounds = check_reward_range(reward_range)
    check_count("n_bootstrap", n_bootstrap)
    check_count("seed", seed, minimum=0)
    data = estimator._checked(rewards, actions, propensities, target_pmf, reward_model)
    terms = estimator._terms(data)
    extra: tuple[str, ...] = ()
    if interval == "wald":
        lower, upper = intervals.wald(terms, alpha)
    elif interval == "bootstrap":
        lower, upper = intervals.bootstrap(terms, alpha, n_bootstrap, seed)
    else:
        bet_weights = estimator._bet_weights(data)
        if bet_weights is None:
            raise InvalidArgument(
                "interval",
                f"'betting' bounds importance-weighted rewards (ips, snips); {estimator.name} "
                "is not one: use 'wald' or 'bootstrap'",
            )
        check_rewards_within(data.rewards, bounds)
        lower, upper = intervals.betting(bet_weights, data.rewards, alpha, bounds)
        if lower > upper:
            extra = (intervals.crossed_betting_warning(lower, upper, bet_weights),)
            lower, upper = upper, lower
    diagnosis = diagnose(data, logged_pmf)
    return Estimate(
        estimator=estimator.name,
        value=terms.value(),
        lower=lower,
        upper=upper,
        interval=interval,
        alpha=alpha,
        n=data.n,
        diagnostics=replace(diagnosis, warnings=diagnosis.warnings + extra),
    )


def _direct(data: LoggedData) -> FloatArray:
    assert data.reward_model is not None  # enforced by Estimator._checked
    direct: FloatArray = np.einsum("ik,ik->i", data.target_pmf, data.reward_model)
    return direct


def _residuals(data: LoggedData) -> FloatArray:
    assert data.reward_model is not None
    return data.rewards - data.reward_model[np.arange(data.n), data.actions]
