"""Confidence intervals for off-policy estimates: Wald (delta method), percentile bootstrap, and
a finite-sample betting interval for importance-weighted bounded rewards.

Every estimator reduces to per-event `Terms`: value = mean(direct) + sum(weighted) / sum(weights).
Linear estimators (IPS, DM, DR, Switch-DR) only have `direct`; self-normalised ones (SNIPS, SNDR)
carry the ratio part, which the Wald interval linearises and the bootstrap resamples as a ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from bandit_server.errors import InvalidArgument
from bandit_server.offline.betting import betting_lower_bound
from bandit_server.offline.estimator_inputs import FloatArray

INTERVALS = ("wald", "bootstrap", "betting")

# Resamples are drawn block by block so each gather reads a block that stays in cache; the
# draw budget bounds memory (indices plus one gathered column, ~48 MB) whatever n and B are.
_BLOCK = 1 << 16
_DRAW_BUDGET = 1 << 22


@dataclass(frozen=True)
class Terms:
    """Per-event pieces of an estimate: value = mean(direct) + sum(weighted) / sum(weights).

    `direct` may be None (pure ratio, SNIPS); `weighted` and `weights` are both None for linear
    estimators, whose value is then the plain mean of `direct`.
    """

    direct: FloatArray | None
    weighted: FloatArray | None = None
    weights: FloatArray | None = None

    @property
    def n(self) -> int:
        first = self.direct if self.direct is not None else self.weights
        assert first is not None
        return int(first.shape[0])

    def value(self) -> float:
        """The point estimate."""
        total = float(np.mean(self.direct)) if self.direct is not None else 0.0
        if self.weighted is not None and self.weights is not None:
            total += _ratio(float(self.weighted.sum()), float(self.weights.sum()))
        return total

    def influence(self) -> FloatArray:
        """Per-event terms whose mean is the estimate and whose sample variance over n is the
        estimate's (delta-method) variance; for linear estimators these are just `direct`."""
        out = np.zeros(self.n) if self.direct is None else self.direct.copy()
        if self.weighted is not None and self.weights is not None:
            theta = _ratio(float(self.weighted.sum()), float(self.weights.sum()))
            out += theta + (self.weighted - theta * self.weights) / float(np.mean(self.weights))
        return out


def wald(terms: Terms, alpha: float) -> tuple[float, float]:
    """Gaussian interval: estimate ± z(1 - alpha/2) · sd(influence) / sqrt(n)."""
    psi = terms.influence()
    n = psi.shape[0]
    if n < 2:
        raise InvalidArgument("rewards", f"a Wald interval needs at least 2 events, got {n}")
    centre = float(np.mean(psi))
    half = _z(alpha) * float(np.std(psi, ddof=1)) / math.sqrt(n)
    return centre - half, centre + half


def bootstrap(terms: Terms, alpha: float, n_bootstrap: int, seed: int) -> tuple[float, float]:
    """Percentile interval over `n_bootstrap` resamples of the n events (with replacement),
    recomputing the whole estimate, ratio included, on each; a seed always gives one interval."""
    columns = [c for c in (terms.direct, terms.weighted, terms.weights) if c is not None]
    sums = resampled_sums(np.stack(columns, axis=1), n_bootstrap, np.random.default_rng(seed))
    n = terms.n
    stats = np.zeros(n_bootstrap)
    col = 0
    if terms.direct is not None:
        stats += sums[:, 0] / n
        col = 1
    if terms.weights is not None:
        num, den = sums[:, col], sums[:, col + 1]
        empty = int(np.count_nonzero(den == 0.0))
        if empty:
            raise InvalidArgument(
                "target_pmf",
                f"the self-normalised estimate is undefined in {empty} of {n_bootstrap} bootstrap "
                f"resamples (no resampled event has a positive weight; only "
                f"{int(np.count_nonzero(terms.weights))} of {n} events do); use the wald or "
                "betting interval",
            )
        stats += num / den
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def resampled_sums(columns: FloatArray, n_bootstrap: int, rng: np.random.Generator) -> FloatArray:
    """Column sums of `n_bootstrap` with-replacement resamples of the rows of an (n, m) array.

    Exactly the multinomial bootstrap: how many of the n draws land in each block of rows (and
    on the all-zero rows, which add nothing and are not read) is multinomial, then the draws
    within a block are uniform over it. Returns (n_bootstrap, m).
    """
    n, m = columns.shape
    rows = columns[np.any(columns != 0.0, axis=1)]
    kept = rows.shape[0]
    starts = np.arange(0, kept, _BLOCK)
    sizes = np.minimum(_BLOCK, kept - starts)
    shares = np.append(sizes, n - kept) / n
    counts = rng.multinomial(n, shares, size=n_bootstrap)
    sums = np.zeros((n_bootstrap, m))
    for j, (start, size) in enumerate(zip(starts.tolist(), sizes.tolist(), strict=True)):
        block = [np.ascontiguousarray(rows[start : start + size, c]) for c in range(m)]
        per_step = max(1, _DRAW_BUDGET // size)
        for b0 in range(0, n_bootstrap, per_step):
            draws = counts[b0 : b0 + per_step, j]
            hit = np.flatnonzero(draws)
            if hit.size == 0:
                continue
            idx = rng.integers(0, size, size=int(draws.sum()), dtype=np.uint16)
            offsets = np.concatenate(([0], np.cumsum(draws[hit])[:-1]))
            for c in range(m):
                sums[b0 + hit, c] += np.add.reduceat(block[c][idx], offsets)
    return sums


def betting(
    weights: FloatArray, rewards: FloatArray, alpha: float, reward_range: tuple[float, float]
) -> tuple[float, float]:
    """Finite-sample interval for the target policy's value from importance weights and rewards
    in [low, high], valid at level 1 - alpha for any n (see `bandit_server.offline.betting`).

    lower = low + (high - low) · L(w (r - low) / (high - low)) and
    upper = high - (high - low) · L(w (high - r) / (high - low)), each side at alpha / 2, where
    L is a lower confidence bound on the mean of a non-negative sequence. Valid with any weights
    0 <= w_i <= pi(a_i|x_i) / p_i (so clipped weights too), even when the target puts mass on
    actions the logger never takes: the missing part of the value lies in [low, high] times
    that mass, which the two one-sided bounds absorb. With probability at most alpha the two
    bounds cross (lower > upper); they are returned as computed so the caller can tell.
    """
    low, high = reward_range
    span = high - low
    lower = low + span * betting_lower_bound(weights * (rewards - low) / span, alpha / 2)
    upper = high - span * betting_lower_bound(weights * (high - rewards) / span, alpha / 2)
    return lower, upper


def crossed_betting_warning(lower: float, upper: float, weights: FloatArray) -> str:
    """The warning for betting bounds that cross: both sides rejected every value."""
    return (
        f"the betting bounds crossed (lower {lower:.6g} > upper {upper:.6g}), so the interval "
        f"reported spans them: the data reject every value, which correct propensities allow "
        f"only with probability alpha; importance weights average {float(weights.mean()):.3g}, "
        "so the logged propensities may be too small"
    )


def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1 - alpha / 2)


def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        raise InvalidArgument(
            "target_pmf",
            "gives probability 0 to every logged action, so self-normalised estimates are "
            "undefined (the sum of importance weights is 0)",
        )
    return num / den
