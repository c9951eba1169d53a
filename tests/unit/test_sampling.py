"""The per-event seed and the draw that picks the served action from the model's distribution."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit_server.core.sampling import draw, event_uniform

# Hypothesis' per-example deadline is a timing check; these are pure CPU work, so none.
UNTIMED = settings(deadline=None)
ids = st.text(max_size=40)
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
# Model distributions: (action index, probability) in the model's order, at least one positive.
weights = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1.0)), min_size=1, max_size=8
).filter(lambda ps: sum(ps) > 0)


def _pmf(ps: list[float]) -> list[tuple[int, float]]:
    # Indices deliberately not in 0..n order: the model's order is not the `_multi` order.
    return [((7 * i + 3) % 11, p) for i, p in enumerate(ps)]


@UNTIMED
@given(ids, ids)
def test_event_uniform_is_deterministic_and_in_unit_interval(
    experiment: str, event_id: str
) -> None:
    """The same (experiment, event_id) always gives the same number, and it lies in [0, 1)."""
    u = event_uniform(experiment, event_id)
    assert u == event_uniform(experiment, event_id)
    assert 0.0 <= u < 1.0


def test_event_uniform_differs_across_event_ids_and_experiments() -> None:
    """Distinct event ids give distinct numbers, and the same id differs between experiments."""
    one = [event_uniform("one", f"e{i}") for i in range(2000)]
    two = [event_uniform("two", f"e{i}") for i in range(2000)]
    assert len(set(one)) == len(one)
    assert all(a != b for a, b in zip(one, two, strict=True))
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert event_uniform("ab", "c") != event_uniform("a", "bc")


def test_event_uniform_is_roughly_uniform() -> None:
    """20,000 sequential ids spread evenly over 20 buckets (chi-square well inside its range)."""
    n, k = 20_000, 20
    counts = Counter(int(event_uniform("exp", f"e{i}") * k) for i in range(n))
    expected = n / k
    chi2 = sum((counts.get(b, 0) - expected) ** 2 / expected for b in range(k))
    # Chi-square with 19 degrees of freedom has mean 19; P(chi2 > 60) is about 4e-6 for a truly
    # uniform source. The ids are fixed, so this is deterministic: it fails only if the hash
    # is biased (e.g. a truncation bug), never by bad luck on a later run.
    assert chi2 < 60, (chi2, sorted(counts.items()))
    assert set(counts) == set(range(k))


@UNTIMED
@given(weights, unit)
def test_draw_puts_the_chosen_first_and_the_rest_in_model_order(ps: list[float], u: float) -> None:
    """The ranking is the drawn action, then the others in model order, with their own probs."""
    pmf = _pmf(ps)
    ranking, probs = draw(pmf, u)
    chosen = ranking[0]
    assert ranking[1:] == tuple(index for index, _ in pmf if index != chosen)
    total = sum(ps)
    by_index = {index: p / total for index, p in pmf}
    assert probs == tuple(by_index[index] for index in ranking)


@UNTIMED
@given(weights, unit)
def test_draw_normalises_probabilities_in_float64(ps: list[float], u: float) -> None:
    """The returned probabilities are Python floats (float64) that sum to 1."""
    _, probs = draw(_pmf(ps), u)
    assert all(type(p) is float for p in probs)
    assert math.isclose(sum(probs), 1.0, rel_tol=0, abs_tol=1e-12)


@UNTIMED
@given(weights, unit)
def test_draw_never_chooses_a_zero_probability_action(ps: list[float], u: float) -> None:
    """Whatever u is, the chosen action has positive probability."""
    _, probs = draw(_pmf(ps), u)
    assert probs[0] > 0


@UNTIMED
@given(weights)
def test_draw_at_the_top_of_the_unit_interval_chooses_an_action_with_mass(ps: list[float]) -> None:
    """u just below 1 picks the last action with mass, never a trailing zero."""
    pmf = _pmf(ps)
    ranking, probs = draw(pmf, math.nextafter(1.0, 0.0))
    assert probs[0] > 0
    assert ranking[0] == [index for index, p in pmf if p > 0][-1]


def test_draw_when_u_falls_past_the_rounded_total_skips_zero_probability_actions() -> None:
    """u above the rounded-down total picks the last action with mass, not a trailing zero."""
    pmf = [(0, 0.186), (5, 0.0), (1, 0.993), (2, 0.0)]
    total = sum(p for _, p in pmf)
    cumulative = 0.0
    for _, p in pmf:
        cumulative += p / total
    u = math.nextafter(1.0, 0.0)
    assert cumulative < 1.0 and u >= cumulative  # the edge case really happens here
    ranking, probs = draw(pmf, u)
    assert ranking == (1, 0, 5, 2)
    assert probs[0] == 0.993 / total


def test_draw_rejects_a_distribution_without_mass() -> None:
    """A distribution that sums to 0 is an error, not a silent choice."""
    with pytest.raises(ValueError, match="sums to 0"):
        draw([(0, 0.0), (1, 0.0)], 0.5)


def test_draw_frequencies_over_an_even_grid_of_u_match_the_pmf_exactly() -> None:
    """Over u = (i + 0.5) / N each action is chosen in proportion to its probability (to 1/N)."""
    pmf = [(2, 5.0), (0, 0.0), (1, 3.0), (3, 2.0)]
    n = 10_000
    counts = Counter(draw(pmf, (i + 0.5) / n)[0][0] for i in range(n))
    assert counts[0] == 0
    for index, expected in ((2, 0.5), (1, 0.3), (3, 0.2)):
        assert abs(counts[index] / n - expected) <= 1 / n


def test_draw_frequencies_over_event_seeds_match_the_pmf() -> None:
    """Seeding the draw with event_uniform over 20,000 ids reproduces the pmf (within 5 sigma)."""
    pmf = [(0, 0.1), (1, 0.6), (2, 0.3)]
    n = 20_000
    counts = Counter(draw(pmf, event_uniform("exp", f"e{i}"))[0][0] for i in range(n))
    for index, p in pmf:
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(counts[index] / n - p) < 5 * sigma, (index, counts)
