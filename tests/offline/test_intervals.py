"""Intervals: the block bootstrap (resampling, seeds, ratios) and the betting bound's properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bandit_server.errors import InvalidArgument
from bandit_server.offline import intervals
from bandit_server.offline.betting import betting_lower_bound, plug_in_bets
from bandit_server.offline.estimators import DR, IPS, SNDR, SNIPS, estimate


def _logged(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Uniform logging over 3 actions, a skewed target, Bernoulli rewards and a reward model."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, n)
    propensities = np.full(n, 1 / 3)
    target = np.tile([0.6, 0.3, 0.1], (n, 1))
    means = np.array([0.7, 0.4, 0.2])
    rewards = (rng.random(n) < means[actions]).astype(float)
    model = np.tile(means, (n, 1)) + rng.normal(0, 0.05, (n, 3))
    return rewards, actions, propensities, target, model


def test_resampled_counts_are_a_multinomial_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Across several blocks, each event is drawn Binomial(n, 1/n) times and n draws in all."""
    monkeypatch.setattr(intervals, "_BLOCK", 4)
    n, resamples = 10, 40_000
    counts = intervals.resampled_sums(np.eye(n), resamples, np.random.default_rng(0))
    assert counts.shape == (resamples, n)
    np.testing.assert_array_equal(counts.sum(axis=1), n)
    # Mean 1 and variance 1 - 1/n per event; 5 standard errors of each moment.
    np.testing.assert_allclose(counts.mean(axis=0), 1.0, atol=5 * math.sqrt(0.9 / resamples))
    np.testing.assert_allclose(counts.var(axis=0), 0.9, atol=5 * math.sqrt(2.2 / resamples))


def test_resampled_sums_skip_zero_rows_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """All-zero rows are never read, yet they still absorb their share of the n draws."""
    monkeypatch.setattr(intervals, "_BLOCK", 2)
    n, resamples = 8, 40_000
    rows = np.eye(n)
    rows[[1, 4, 5]] = 0.0
    counts = intervals.resampled_sums(rows, resamples, np.random.default_rng(1))
    assert (counts[:, [1, 4, 5]] == 0).all()
    # The 5 kept events receive Binomial(8, 5/8) draws in total.
    assert counts.sum(axis=1).max() <= n
    assert counts.sum(axis=1).mean() == pytest.approx(5.0, abs=5 * math.sqrt(15 / 8 / resamples))
    np.testing.assert_allclose(counts[:, [0, 2, 3, 6, 7]].mean(axis=0), 1.0, atol=0.03)


def test_bootstrap_is_seeded() -> None:
    """The same seed gives the identical interval; other seeds give different ones."""
    data = _logged(500, seed=2)
    for estimator in (IPS(), SNIPS(), DR(), SNDR()):
        runs = [
            estimate(estimator, *data, interval="bootstrap", n_bootstrap=200, seed=s)
            for s in (7, 7, 8)
        ]
        assert (runs[0].lower, runs[0].upper) == (runs[1].lower, runs[1].upper)
        assert (runs[0].lower, runs[0].upper) != (runs[2].lower, runs[2].upper)


def test_bootstrap_resamples_ratios_as_ratios() -> None:
    """When every reward is 0.5, every resampled SNIPS ratio is 0.5: the interval is a point."""
    _, actions, propensities, target, _ = _logged(300, seed=3)
    result = estimate(
        SNIPS(), np.full(300, 0.5), actions, propensities, target, interval="bootstrap"
    )
    assert result.lower == pytest.approx(0.5, abs=1e-12)
    assert result.upper == pytest.approx(0.5, abs=1e-12)
    # IPS, a plain mean of w r, still varies with the weights.
    ips = estimate(IPS(), np.full(300, 0.5), actions, propensities, target, interval="bootstrap")
    assert ips.upper - ips.lower > 0.05


def test_bootstrap_agrees_with_wald_on_a_large_sample() -> None:
    """With 10,000 events the percentile and Gaussian intervals nearly coincide."""
    data = _logged(10_000, seed=4)
    for estimator in (IPS(), SNIPS(), DR(), SNDR()):
        wald = estimate(estimator, *data)
        boot = estimate(estimator, *data, interval="bootstrap", n_bootstrap=2000)
        width = wald.upper - wald.lower
        # Monte Carlo error of the 2.5% and 97.5% quantiles from 2000 resamples is ~3% of width.
        assert boot.lower == pytest.approx(wald.lower, abs=0.1 * width)
        assert boot.upper == pytest.approx(wald.upper, abs=0.1 * width)


def test_bootstrap_ratio_with_few_supported_events_raises() -> None:
    """SNIPS resamples without a single positive weight make the bootstrap refuse, naming why."""
    n = 200
    actions = np.ones(n, dtype=int)
    actions[0] = 0
    target = np.tile([1.0, 0.0], (n, 1))
    with pytest.raises(
        InvalidArgument, match=r"target_pmf: .* bootstrap resamples .* only 1 of 200"
    ):
        estimate(SNIPS(), np.ones(n), actions, np.full(n, 0.5), target, interval="bootstrap")


def test_betting_lower_bound_is_below_the_mean_and_tightens_with_n() -> None:
    """For constant observations c the bound lies below c and approaches it as n grows."""
    bounds = [betting_lower_bound(np.full(n, 0.4), 0.025) for n in (10, 100, 1000, 10_000)]
    assert all(0.0 <= b < 0.4 for b in bounds)
    assert bounds == sorted(bounds)
    assert bounds[-1] > 0.39
    assert betting_lower_bound(np.zeros(50), 0.025) == 0.0


def test_bets_are_predictable() -> None:
    """Each bet depends only on earlier observations: changing x_t moves bets after t only."""
    x = np.random.default_rng(10).exponential(size=200)
    changed = x.copy()
    changed[50] = 100.0
    before, after = plug_in_bets(x, 0.025), plug_in_bets(changed, 0.025)
    np.testing.assert_array_equal(before[:51], after[:51])
    assert (before[51:] != after[51:]).all()


def test_betting_interval_widens_as_alpha_shrinks() -> None:
    """A 99% betting interval contains the 90% one."""
    data = _logged(400, seed=5)[:4]
    narrow = estimate(IPS(), *data, interval="betting", alpha=0.10)
    wide = estimate(IPS(), *data, interval="betting", alpha=0.01)
    assert wide.lower < narrow.lower < narrow.upper < wide.upper


def test_betting_interval_is_equivariant_in_the_reward_range() -> None:
    """Rewards in [0, 10] give exactly 10 times the interval of the same rewards in [0, 1]."""
    rewards, actions, propensities, target, _ = _logged(300, seed=6)
    unit = estimate(IPS(), rewards, actions, propensities, target, interval="betting")
    scaled = estimate(
        IPS(), 10 * rewards, actions, propensities, target, interval="betting", reward_range=(0, 10)
    )
    assert scaled.lower == pytest.approx(10 * unit.lower, rel=1e-7)
    assert scaled.upper == pytest.approx(10 * unit.upper, rel=1e-7)
    shifted = estimate(
        IPS(), rewards - 1, actions, propensities, target, interval="betting", reward_range=(-1, 0)
    )
    assert shifted.lower == pytest.approx(unit.lower - 1, abs=1e-7)
    assert shifted.upper == pytest.approx(unit.upper - 1, abs=1e-7)


def test_betting_interval_stays_within_the_reward_range() -> None:
    """Betting bounds never leave [low, high], even for a handful of events."""
    rewards, actions, propensities, target, _ = _logged(5, seed=7)
    result = estimate(IPS(), rewards, actions, propensities, target, interval="betting")
    assert 0.0 <= result.lower <= result.upper <= 1.0


def test_betting_interval_shared_by_ips_and_snips() -> None:
    """SNIPS and IPS get the same betting interval: it bounds the value, not the estimator."""
    data = _logged(300, seed=8)[:4]
    ips = estimate(IPS(), *data, interval="betting")
    snips = estimate(SNIPS(), *data, interval="betting")
    assert (ips.lower, ips.upper) == (snips.lower, snips.upper)
    assert ips.value != snips.value


def test_crossed_betting_bounds_are_reported_with_a_warning() -> None:
    """Propensities 5x too small make both sides reject everything: the span and a warning."""
    rewards, actions, _, target, _ = _logged(2000, seed=9)
    result = estimate(IPS(), rewards, actions, np.full(2000, 1 / 15), target, interval="betting")
    assert result.lower <= result.upper
    assert any("betting bounds crossed" in w for w in result.diagnostics.warnings)
    assert any("mean importance weight" in w for w in result.diagnostics.warnings)
