"""Overlap diagnostics between a logging policy and a target policy: how much the logged data can
say about the target, and signs that the logged propensities are wrong."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from bandit_server.errors import InvalidArgument
from bandit_server.offline.estimator_inputs import FloatArray, PolicyData, check_pmf, check_policy

# Below this many effective events a Gaussian interval rests on too few weights to be trusted.
MIN_EFFECTIVE_EVENTS = 100.0
# Below this share the target is so far from the logger that most events barely count.
MIN_EFFECTIVE_SHARE = 0.05
# A mean weight this many standard errors from its expectation is very unlikely to be noise
# (two-sided p ~ 6e-5), so the warning rarely fires on correct logs.
MEAN_WEIGHT_Z = 4.0


@dataclass(frozen=True)
class Diagnostics:
    """How well the logged events cover the target policy.

    Weights are w_i = pi(a_i|x_i) / p_i (target over logged probability of the logged action).
    - effective_sample_size: (sum w)^2 / sum w^2; n when the target equals the logger.
    - mean_weight: should be close to 1 (minus any unsupported mass); far from it means the logged
      propensities are wrong or the target leaves the logger's support.
    - zero_support_share: share of events whose logged action has target probability 0.
    - unsupported_share / unsupported_mass: share of events where the target puts probability on
      actions the logger could not choose, and the mean of that probability. Computable only from
      the logger's full distribution (`logged_pmf`); the logged action's propensity alone does not
      say what else the logger could have done, so both are None without it.
    - warnings: plain-language problems found, empty when none.
    """

    n: int
    effective_sample_size: float
    max_weight: float
    mean_weight: float
    zero_support_share: float
    unsupported_share: float | None
    unsupported_mass: float | None
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values (warnings as a list)."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out


def diagnostics(
    actions: npt.ArrayLike,
    propensities: npt.ArrayLike,
    target_pmf: npt.ArrayLike,
    *,
    logged_pmf: npt.ArrayLike | None = None,
) -> Diagnostics:
    """Diagnose overlap for logged `actions` (n,) with `propensities` (n,) under `target_pmf`
    (n, k); `logged_pmf` (n, k), the logger's full distribution, adds the support checks."""
    return diagnose(check_policy(actions, propensities, target_pmf), logged_pmf)


def diagnose(data: PolicyData, logged_pmf: npt.ArrayLike | None = None) -> Diagnostics:
    """`diagnostics` on already validated inputs."""
    w = data.weights
    n = data.n
    total, squares = float(w.sum()), float(np.dot(w, w))
    ess = total * total / squares if squares > 0.0 else 0.0
    mean_weight = total / n
    warnings: list[str] = []
    unsupported_share = unsupported_mass = None
    expected = np.ones(n)
    if logged_pmf is not None:
        logged = check_pmf("logged_pmf", logged_pmf, n, "actions")
        if logged.shape != data.target_pmf.shape:
            raise InvalidArgument(
                "logged_pmf",
                f"has shape {logged.shape} but target_pmf has shape {data.target_pmf.shape}",
            )
        missing = np.where(logged == 0.0, data.target_pmf, 0.0).sum(axis=1)
        unsupported_share = float(np.mean(missing > 0.0))
        unsupported_mass = float(np.mean(missing))
        expected = 1.0 - missing
        warnings += _support_warnings(data, logged, unsupported_share, unsupported_mass)
    if total == 0.0:
        warnings.append(
            "the target gives probability 0 to every logged action: IPS-style estimates are 0 "
            "and self-normalised ones are undefined"
        )
    elif ess < MIN_EFFECTIVE_EVENTS:
        warnings.append(
            f"effective sample size {ess:.1f} (of {n} events) is small: a few heavily weighted "
            "events decide the estimate and Gaussian intervals are unreliable; prefer the "
            "betting interval"
        )
    elif ess < MIN_EFFECTIVE_SHARE * n:
        warnings.append(
            f"effective sample size {ess:.0f} is {100 * ess / n:.1f}% of the {n} events: the "
            "target is far from the logging policy"
        )
    warnings += _mean_weight_warning(w, expected)
    return Diagnostics(
        n=n,
        effective_sample_size=ess,
        max_weight=float(w.max()),
        mean_weight=mean_weight,
        zero_support_share=float(np.mean(data.target_prob == 0.0)),
        unsupported_share=unsupported_share,
        unsupported_mass=unsupported_mass,
        warnings=tuple(warnings),
    )


def _support_warnings(data: PolicyData, logged: FloatArray, share: float, mass: float) -> list[str]:
    out: list[str] = []
    if share > 0.0:
        out.append(
            f"on {100 * share:.1f}% of events the target puts probability (mean {mass:.3g}) on "
            "actions the logger could not choose: that part of the value is not in the data, so "
            "IPS/DR estimates are biased"
        )
    logged_prob = logged[np.arange(data.n), data.actions]
    differs = ~np.isclose(logged_prob, data.propensities, rtol=1e-5, atol=1e-9)
    if differs.any():
        i = int(np.argmax(differs))
        out.append(
            f"propensities differ from logged_pmf at the logged action on {int(differs.sum())} "
            f"events (first: propensities[{i}] = {data.propensities[i]:.6g}, "
            f"logged_pmf[{i}, {int(data.actions[i])}] = {logged_prob[i]:.6g})"
        )
    return out


def _mean_weight_warning(w: FloatArray, expected: FloatArray) -> list[str]:
    n = w.shape[0]
    if n < 2:
        return []
    gap = w - expected
    deviation = float(np.mean(gap))
    se = float(np.std(gap, ddof=1)) / math.sqrt(n)
    # Rounding alone moves the mean by far less than 1e-9; anything beyond that with zero
    # spread is a real offset.
    if abs(deviation) <= max(MEAN_WEIGHT_Z * se, 1e-9):
        return []
    target = float(np.mean(expected))
    sigmas = f"{abs(deviation) / se:.1f} standard errors" if se > 0.0 else "with no spread"
    return [
        f"mean importance weight {float(np.mean(w)):.3g} is far from {target:.3g} ({sigmas}): "
        "logged propensities may be wrong, or the target puts mass on actions the logger "
        "never chose"
    ]
