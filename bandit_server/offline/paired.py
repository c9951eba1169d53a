"""Paired comparisons between policies on the same logged events, and cumulative value curves.

A candidate is compared with the logged policy on the same events, so the difference gets its
own interval from per-event terms (far tighter than subtracting two intervals, and honest about
their correlation). Every estimator reduces to per-event `Terms` (see `intervals.Terms`):
- Wald: the mean of the difference of the two influence terms (exact pseudo-outcomes for the
  linear estimators, the delta-method linearisation for SNIPS/SNDR) ± z · sd / sqrt(n).
- Bootstrap: the same resample of events for both policies, both estimates recomputed in full
  (ratios as ratios) on each resample, percentile interval of their difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from bandit_server.errors import InvalidArgument
from bandit_server.offline.dataset import FloatArray, IntArray
from bandit_server.offline.estimators import ALL_ESTIMATORS, Estimator, Terms
from bandit_server.offline.intervals import resampled_sums

ESTIMATORS: dict[str, Estimator] = {type(e).__name__: e for e in ALL_ESTIMATORS}
PAIRED_INTERVALS = ("wald", "bootstrap")


def estimator_named(name: str, field: str = "estimator") -> Estimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise InvalidArgument(field, f"{name!r} is not one of {tuple(ESTIMATORS)}") from None


@dataclass(frozen=True, slots=True)
class Arms:
    """Logged events with a reward: what every estimate here is computed from."""

    rewards: FloatArray
    actions: IntArray
    propensities: FloatArray
    reward_model: FloatArray | None = None

    def terms(self, estimator: Estimator, pmf: FloatArray) -> Terms:
        model = self.reward_model if estimator.uses_reward_model else None
        return estimator.terms(self.rewards, self.actions, self.propensities, pmf, model)


@dataclass(frozen=True, slots=True)
class MeanInterval:
    value: float
    lower: float
    upper: float


def paired_difference(
    terms: Terms,
    reference: Terms,
    *,
    interval: str,
    alpha: float,
    n_bootstrap: int,
    seed: int,
) -> MeanInterval:
    """Estimate(terms) - estimate(reference) on the same events, with a 1 - alpha interval."""
    if not 0.0 < alpha < 1.0:
        raise InvalidArgument("alpha", f"{alpha!r} is not in (0, 1)")
    value = terms.value() - reference.value()
    n = terms.n
    if interval == "wald":
        if n < 2:
            return MeanInterval(value, -math.inf, math.inf)
        diff = terms.influence() - reference.influence()
        half = NormalDist().inv_cdf(1 - alpha / 2) * float(diff.std(ddof=1)) / math.sqrt(n)
        return MeanInterval(value, value - half, value + half)
    if interval != "bootstrap":
        raise InvalidArgument("interval", f"{interval!r} is not one of {PAIRED_INTERVALS}")
    if n_bootstrap < 1:
        raise InvalidArgument("n_bootstrap", f"{n_bootstrap!r} must be >= 1")
    direct = _direct(terms) - _direct(reference)
    columns = [direct]
    ratios = []
    for part in (terms, reference):
        if part.weighted is not None and part.weights is not None:
            ratios.append(len(columns))
            columns += [part.weighted, part.weights]
    sums = resampled_sums(np.stack(columns, axis=1), n_bootstrap, np.random.default_rng(seed))
    stats = sums[:, 0] / n
    for sign, col in zip((1.0, -1.0) if len(ratios) == 2 else _signs(terms), ratios, strict=False):
        den = sums[:, col + 1]
        stats += sign * np.divide(sums[:, col], den, out=np.zeros_like(den), where=den != 0)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return MeanInterval(value, float(low), float(high))


def _signs(terms: Terms) -> tuple[float, ...]:
    # Only one of the pair is self-normalised: + if it is the candidate, - if the reference.
    return (1.0,) if terms.weights is not None else (-1.0,)


def _direct(terms: Terms) -> FloatArray:
    return np.zeros(terms.n) if terms.direct is None else terms.direct


def cumulative_curve(terms: Terms) -> FloatArray:
    """The estimate on the first t events, for every t (the value as the log accrues)."""
    t = np.arange(1, terms.n + 1)
    out = np.cumsum(_direct(terms)) / t
    if terms.weighted is not None and terms.weights is not None:
        num, den = np.cumsum(terms.weighted), np.cumsum(terms.weights)
        out = out + np.divide(num, den, out=np.zeros_like(num), where=den != 0)
    return np.asarray(out)
