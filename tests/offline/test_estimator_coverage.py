"""Coverage: intervals on a synthetic problem whose true target value is known exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from bandit_server.offline.estimators import DR, IPS, SNIPS, Estimator, estimate

# Three contexts, four actions, Bernoulli rewards with these means.
CONTEXT_PROBS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[0.2, 0.5, 0.3, 0.1], [0.6, 0.2, 0.4, 0.3], [0.1, 0.1, 0.7, 0.5]])
LOGGING = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
TARGET = np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.8, 0.1]])
# sum_x P(x) sum_a pi(a|x) E[r|x,a] = 0.5*0.39 + 0.3*0.51 + 0.2*0.62 = 0.472
TRUE_VALUE = float(CONTEXT_PROBS @ (TARGET * MEANS).sum(axis=1))
MODEL_NOISE = 0.05  # the reward model is the true means plus N(0, 0.05^2) per event and action


@dataclass
class Tally:
    covered: int = 0
    squared_errors: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)

    def coverage(self) -> float:
        return self.covered / len(self.errors)

    def mse(self) -> float:
        return float(np.mean(self.squared_errors))


def _logged(n: int, replication: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng([20261122, replication])
    contexts = rng.choice(3, size=n, p=CONTEXT_PROBS)
    cdf = np.cumsum(LOGGING[contexts], axis=1)
    actions = np.minimum((rng.random(n)[:, None] >= cdf).sum(axis=1), 3)
    rewards = (rng.random(n) < MEANS[contexts, actions]).astype(float)
    model = MEANS[contexts] + rng.normal(0.0, MODEL_NOISE, (n, 4))
    return rewards, actions, LOGGING[contexts, actions], TARGET[contexts], model


def _simulate(
    replications: int, n: int, runs: list[tuple[Estimator, str]], n_bootstrap: int = 1000
) -> dict[tuple[str, str], Tally]:
    tallies = {(e.name, interval): Tally() for e, interval in runs}
    for replication in range(replications):
        rewards, actions, propensities, target, model = _logged(n, replication)
        for estimator, interval in runs:
            result = estimate(
                estimator, rewards, actions, propensities, target,
                model if estimator.uses_reward_model else None,
                interval=interval, n_bootstrap=n_bootstrap, seed=replication,
            )  # fmt: skip
            tally = tallies[(estimator.name, interval)]
            tally.covered += result.lower <= TRUE_VALUE <= result.upper
            tally.errors.append(result.value - TRUE_VALUE)
            tally.squared_errors.append((result.value - TRUE_VALUE) ** 2)
    return tallies


def _band(replications: int, low: float = 0.93, high: float = 0.97) -> tuple[float, float]:
    """Observed coverage band for intervals whose true coverage is in [low, high]: 4 binomial
    standard deviations beyond each end, so a correct interval falls outside with probability
    below 1e-4 (normal approximation to the binomial count)."""
    sd_low = math.sqrt(low * (1 - low) / replications)
    sd_high = math.sqrt(high * (1 - high) / replications)
    return low - 4 * sd_low, high + 4 * sd_high


FAST_REPLICATIONS, FAST_N = 2000, 500
FAST_RUNS: list[tuple[Estimator, str]] = [
    (IPS(), "wald"), (SNIPS(), "wald"), (DR(), "wald"), (IPS(), "betting"),
]  # fmt: skip


@pytest.fixture(scope="module")
def fast() -> dict[tuple[str, str], Tally]:
    return _simulate(FAST_REPLICATIONS, FAST_N, FAST_RUNS)


def test_true_value_is_the_hand_computed_one() -> None:
    """The ground truth is 0.5*0.39 + 0.3*0.51 + 0.2*0.62 = 0.472."""
    assert abs(TRUE_VALUE - 0.472) < 1e-12


@pytest.mark.parametrize("name", ["ips", "snips", "dr"])
def test_wald_covers_close_to_nominal(fast: dict[tuple[str, str], Tally], name: str) -> None:
    """95% Wald intervals cover the true value at a rate consistent with 93-97%."""
    # 2000 replications: the band is [0.907, 0.985]; at n = 500 the true rates are ~0.94-0.95.
    low, high = _band(FAST_REPLICATIONS)
    assert low <= fast[(name, "wald")].coverage() <= high


def test_betting_interval_covers_at_least_nominal(fast: dict[tuple[str, str], Tally]) -> None:
    """The finite-sample betting interval covers at least 95% (it is conservative)."""
    # Its true rate here is ~0.98 (sd 0.003 over 2000 replications): 0.95 is ~10 sd below.
    assert fast[("ips", "betting")].coverage() >= 0.95


def test_dr_beats_ips_with_a_good_reward_model(fast: dict[tuple[str, str], Tally]) -> None:
    """With the true means plus small noise as the model, DR's MSE is well below IPS's."""
    # Each MSE averages 2000 squared errors (relative sd ~3%); the observed ratio is ~0.5.
    assert fast[("dr", "wald")].mse() < 0.75 * fast[("ips", "wald")].mse()


@pytest.mark.parametrize("name", ["ips", "dr"])
def test_unbiased_estimators_centre_on_the_truth(
    fast: dict[tuple[str, str], Tally], name: str
) -> None:
    """IPS and DR errors average to zero within 4 standard errors."""
    errors = np.array(fast[(name, "wald")].errors)
    assert abs(errors.mean()) <= 4 * errors.std(ddof=1) / math.sqrt(errors.size)


@pytest.mark.slow
def test_wald_and_betting_coverage_at_scale() -> None:
    """Over 5000 replications of 2000 events, Wald covers 93-97% and betting at least 95%."""
    runs: list[tuple[Estimator, str]] = [
        (IPS(), "wald"), (SNIPS(), "wald"), (DR(), "wald"), (IPS(), "betting"),
        (SNIPS(), "betting"),
    ]  # fmt: skip
    tallies = _simulate(5000, 2000, runs)
    # At n = 2000 the Wald rates are ~0.945-0.95; the observed share has sd ~0.003, so 93% and
    # 97% are over 5 sd away.
    for name in ("ips", "snips", "dr"):
        assert 0.93 <= tallies[(name, "wald")].coverage() <= 0.97, name
    assert tallies[("ips", "betting")].coverage() >= 0.95
    assert tallies[("dr", "wald")].mse() < 0.75 * tallies[("ips", "wald")].mse()


@pytest.mark.slow
def test_bootstrap_coverage() -> None:
    """Percentile bootstrap intervals (1000 resamples) cover at a rate consistent with 93-97%."""
    runs: list[tuple[Estimator, str]] = [
        (IPS(), "bootstrap"),
        (SNIPS(), "bootstrap"),
        (DR(), "bootstrap"),
    ]
    replications = 2000
    tallies = _simulate(replications, 1000, runs)
    low, high = _band(replications)
    for name in ("ips", "snips", "dr"):
        assert low <= tallies[(name, "bootstrap")].coverage() <= high, name
