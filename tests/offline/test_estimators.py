"""Off-policy estimators: closed forms on a hand-computed example, validation, results."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from bandit_server.errors import InvalidArgument
from bandit_server.offline.estimators import (
    ALL_ESTIMATORS,
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    Estimate,
    Estimator,
    SwitchDR,
    diagnostics,
    estimate,
)

# Three events, two actions. Importance weights w = pi(a_i|x_i) / p_i = [0.8/0.5, 0.5/0.25,
# 1.0/0.75] = [1.6, 2, 4/3]; reward model at the logged actions q_i(a_i) = [0.6, 0.1, 0.9];
# DM_i = sum_a pi(a|x_i) q_i(a) = [0.8*0.6 + 0.2*0.4, 0.5*0.3 + 0.5*0.1, 0*0.2 + 1*0.9]
#      = [0.56, 0.2, 0.9]; residuals r_i - q_i(a_i) = [0.4, -0.1, 0.1].
REWARDS = np.array([1.0, 0.0, 1.0])
ACTIONS = np.array([0, 1, 1])
PROPENSITIES = np.array([0.5, 0.25, 0.75])
TARGET = np.array([[0.8, 0.2], [0.5, 0.5], [0.0, 1.0]])
MODEL = np.array([[0.6, 0.4], [0.3, 0.1], [0.2, 0.9]])
ARGS = (REWARDS, ACTIONS, PROPENSITIES, TARGET, MODEL)

CLOSED_FORMS = [
    # (1.6*1 + 2*0 + 4/3*1) / 3
    (IPS(), (1.6 + 4 / 3) / 3),
    # weights capped at 1.5: (1.5*1 + 1.5*0 + 4/3*1) / 3
    (IPS(clip=1.5), (1.5 + 4 / 3) / 3),
    # (1.6 + 4/3) / (1.6 + 2 + 4/3) = (44/15) / (74/15)
    (SNIPS(), 22 / 37),
    # (0.56 + 0.2 + 0.9) / 3
    (DM(), 1.66 / 3),
    # (0.56 + 1.6*0.4) + (0.2 + 2*(-0.1)) + (0.9 + 4/3*0.1) = 1.2 + 0 + 1.0333...
    (DR(), (1.2 + 0.0 + 0.9 + 0.4 / 3) / 3),
    # weights capped at 1.5: (0.56 + 1.5*0.4) + (0.2 - 1.5*0.1) + (0.9 + 4/3*0.1)
    (DR(clip=1.5), (1.16 + 0.05 + 0.9 + 0.4 / 3) / 3),
    # mean DM + (0.64 - 0.2 + 0.4/3) / (74/15) = 1.66/3 + (43/75) * (15/74)
    (SNDR(), 1.66 / 3 + 43 / 370),
    # w = 2 > tau: event 1 keeps only its DM term 0.2; the others are DR terms
    (SwitchDR(tau=1.7), (1.2 + 0.2 + 0.9 + 0.4 / 3) / 3),
    # w = 2 = tau is kept: the switch drops only weights strictly above tau, so this is DR
    (SwitchDR(tau=2.0), (1.2 + 0.0 + 0.9 + 0.4 / 3) / 3),
    # every weight <= tau: exactly DR
    (SwitchDR(tau=math.inf), (1.2 + 0.0 + 0.9 + 0.4 / 3) / 3),
]


@pytest.mark.parametrize(("estimator", "expected"), CLOSED_FORMS, ids=lambda v: str(v))
def test_point_matches_closed_form(estimator: Estimator, expected: float) -> None:
    """Each estimator's point estimate equals its hand-computed value on the tiny example."""
    assert estimator.point(*ARGS) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("estimator", "expected"), CLOSED_FORMS, ids=lambda v: str(v))
def test_pseudo_outcomes_average_to_the_estimate(estimator: Estimator, expected: float) -> None:
    """Pseudo-outcomes are one per event and their mean is the estimate (ratios included)."""
    terms = estimator.pseudo_outcomes(*ARGS)
    assert terms.shape == (3,)
    assert float(terms.mean()) == pytest.approx(expected, rel=1e-12)


def test_linear_pseudo_outcomes_are_the_per_event_terms() -> None:
    """IPS and DR pseudo-outcomes are w_i r_i and DM_i + w_i (r_i - q_i(a_i)) exactly."""
    np.testing.assert_allclose(IPS().pseudo_outcomes(*ARGS), [1.6, 0.0, 4 / 3])
    np.testing.assert_allclose(DR().pseudo_outcomes(*ARGS), [1.2, 0.0, 0.9 + 0.4 / 3])


def test_snips_pseudo_outcomes_are_the_linearisation() -> None:
    """SNIPS pseudo-outcomes are theta + w_i (r_i - theta) / mean(w), the delta-method terms."""
    w = np.array([1.6, 2.0, 4 / 3])
    theta = 22 / 37
    expected = theta + w * (REWARDS - theta) / w.mean()
    np.testing.assert_allclose(SNIPS().pseudo_outcomes(*ARGS), expected, rtol=1e-12)


def test_sndr_pseudo_outcomes_linearise_the_ratio_part() -> None:
    """SNDR pseudo-outcomes are DM_i + theta + w_i (res_i - theta) / mean(w), theta = 43/370."""
    w = np.array([1.6, 2.0, 4 / 3])
    residuals = np.array([0.4, -0.1, 0.1])
    theta = 43 / 370
    expected = np.array([0.56, 0.2, 0.9]) + theta + w * (residuals - theta) / w.mean()
    np.testing.assert_allclose(SNDR().pseudo_outcomes(*ARGS), expected, rtol=1e-12)


def test_wald_interval_matches_hand_formula_for_ips() -> None:
    """Wald is mean ± 1.959964 · sd(ddof=1) / sqrt(n) of the IPS terms."""
    terms = np.array([1.6, 0.0, 4 / 3])
    half = 1.959963984540054 * float(np.std(terms, ddof=1)) / math.sqrt(3)
    result = estimate(IPS(), REWARDS, ACTIONS, PROPENSITIES, TARGET)
    assert (result.lower, result.upper) == pytest.approx(
        (terms.mean() - half, terms.mean() + half), rel=1e-12
    )
    assert result.value == pytest.approx(terms.mean(), rel=1e-12)


def test_wald_interval_for_snips_uses_the_delta_method() -> None:
    """SNIPS's Wald half-width is z · sd(w (r - theta)) / (mean(w) sqrt(n))."""
    w = np.array([1.6, 2.0, 4 / 3])
    theta = 22 / 37
    half = 1.959963984540054 * float(np.std(w * (REWARDS - theta), ddof=1)) / w.mean()
    half /= math.sqrt(3)
    result = estimate(SNIPS(), REWARDS, ACTIONS, PROPENSITIES, TARGET)
    assert result.upper - result.lower == pytest.approx(2 * half, rel=1e-12)
    assert (result.lower + result.upper) / 2 == pytest.approx(theta, rel=1e-12)


def test_all_estimators_holds_one_default_of_each() -> None:
    """ALL_ESTIMATORS has one instance of every estimator class, each with a distinct name."""
    kinds = {type(e) for e in ALL_ESTIMATORS}
    assert kinds == {IPS, SNIPS, DM, DR, SNDR, SwitchDR}
    assert len({e.name for e in ALL_ESTIMATORS}) == len(ALL_ESTIMATORS)
    assert [e.name for e in ALL_ESTIMATORS] == ["ips", "snips", "dm", "dr", "sndr", "switch_dr"]
    assert {e.name for e in ALL_ESTIMATORS if e.uses_reward_model} == {
        "dm",
        "dr",
        "sndr",
        "switch_dr",
    }


def test_names_show_non_default_parameters() -> None:
    """A clipped or re-tuned estimator is named with its parameter."""
    assert IPS(clip=10).name == "ips(clip=10)"
    assert DR(clip=2.5).name == "dr(clip=2.5)"
    assert SwitchDR(tau=3).name == "switch_dr(tau=3)"


@pytest.mark.parametrize(
    "make",
    [
        lambda: IPS(clip=0),
        lambda: IPS(clip=-1.0),
        lambda: IPS(clip=math.nan),
        lambda: DR(clip="5"),  # type: ignore[arg-type]
        lambda: SwitchDR(tau=None),  # type: ignore[arg-type]
        lambda: SwitchDR(tau=0.0),
    ],
)
def test_bad_parameters_are_rejected_on_construction(make: Any) -> None:
    """Estimator parameters are checked in __post_init__ and the message names the parameter."""
    with pytest.raises(InvalidArgument) as err:
        make()
    assert err.value.field in ("clip", "tau")


def test_estimators_are_frozen() -> None:
    """Estimators are immutable values."""
    with pytest.raises(AttributeError):
        IPS().clip = 3.0  # type: ignore[misc]


def test_inputs_are_not_mutated() -> None:
    """Estimating leaves every input array unchanged."""
    arrays = [a.copy() for a in ARGS]
    for estimator in ALL_ESTIMATORS:
        for interval in ("wald", "bootstrap"):
            estimate(estimator, *ARGS, interval=interval, n_bootstrap=50)
    for before, after in zip(arrays, ARGS, strict=True):
        np.testing.assert_array_equal(before, after)


def test_estimate_to_dict_is_json_ready() -> None:
    """Estimate.to_dict holds plain values, nested diagnostics included, and survives json."""
    result = estimate(DR(), *ARGS, interval="bootstrap", n_bootstrap=20, seed=3)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["estimator"] == "dr"
    assert data["interval"] == "bootstrap"
    assert data["n"] == 3
    assert data["value"] == pytest.approx(result.value)
    assert data["diagnostics"]["effective_sample_size"] == pytest.approx(
        result.diagnostics.effective_sample_size
    )
    assert isinstance(data["diagnostics"]["warnings"], list)
    assert isinstance(result, Estimate)


def test_ragged_action_sets_padded_with_zero_probability() -> None:
    """Padding columns with target probability 0 leave every estimate unchanged."""
    padded_target = np.hstack([TARGET, np.zeros((3, 2))])
    padded_model = np.hstack([MODEL, np.full((3, 2), 0.5)])
    for estimator in ALL_ESTIMATORS:
        plain = estimator.point(*ARGS)
        padded = estimator.point(REWARDS, ACTIONS, PROPENSITIES, padded_target, padded_model)
        assert padded == pytest.approx(plain, rel=1e-12)


def test_estimates_accept_plain_lists() -> None:
    """Array-likes work as well as numpy arrays."""
    value = IPS().point([1, 0, 1], [0, 1, 1], [0.5, 0.25, 0.75], TARGET.tolist())
    assert value == pytest.approx((1.6 + 4 / 3) / 3)


def _bad(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "rewards": REWARDS,
        "actions": ACTIONS,
        "propensities": PROPENSITIES,
        "target_pmf": TARGET,
        "reward_model": MODEL,
    }
    base.update(changes)
    return base


def _case(case_id: str, inputs: dict[str, Any], field: str, shown: str, **options: Any) -> Any:
    return pytest.param(inputs, options, field, shown, id=case_id)


NAN_TARGET = np.array([[0.8, 0.2], [math.nan, 0.5], [0.0, 1.0]])
INF_MODEL = np.array([[0.6, 0.4], [0.3, math.inf], [0.2, 0.9]])
EMPTY = _bad(
    rewards=np.array([]),
    actions=np.array([], dtype=int),
    propensities=np.array([]),
    target_pmf=np.zeros((0, 2)),
    reward_model=np.zeros((0, 2)),
)
ONE_EVENT = _bad(
    rewards=REWARDS[:1],
    actions=ACTIONS[:1],
    propensities=PROPENSITIES[:1],
    target_pmf=TARGET[:1],
    reward_model=MODEL[:1],
)

VALIDATION_CASES = [
    _case("p=0", _bad(propensities=np.array([0.5, 0.0, 0.75])), "propensities", "propensities[1]"),
    _case("p>1", _bad(propensities=np.array([0.5, 0.25, 1.5])), "propensities", "is 1.5"),
    _case("nan reward", _bad(rewards=np.array([1.0, math.nan, 1.0])), "rewards", "[1] is nan"),
    _case("inf model", _bad(reward_model=INF_MODEL), "reward_model", "reward_model[1, 1] is inf"),
    _case("nan target", _bad(target_pmf=NAN_TARGET), "target_pmf", "target_pmf[1, 0] is nan"),
    _case(
        "row sum",
        _bad(target_pmf=np.array([[0.8, 0.2], [0.5, 0.49], [0.0, 1.0]])),
        "target_pmf",
        "row sum of target_pmf[1] is 0.99",
    ),
    _case(
        "negative",
        _bad(target_pmf=np.array([[0.8, 0.2], [1.5, -0.5], [0.0, 1.0]])),
        "target_pmf",
        "target_pmf[1, 1] is -0.5",
    ),
    _case("short actions", _bad(actions=np.array([0, 1])), "actions", "shape (2,)"),
    _case("target rows", _bad(target_pmf=TARGET[:2]), "target_pmf", "shape (2, 2)"),
    _case("model shape", _bad(reward_model=MODEL[:, :1]), "reward_model", "shape (3, 1)"),
    _case("rewards 2-D", _bad(rewards=np.ones((3, 1))), "rewards", "shape (3, 1)"),
    _case("action too big", _bad(actions=np.array([0, 2, 1])), "actions", "actions[1] is 2"),
    _case("action negative", _bad(actions=np.array([0, 1, -1])), "actions", "actions[2] is -1"),
    _case("float actions", _bad(actions=np.array([0.0, 1.0, 1.0])), "actions", "float64"),
    _case("empty", EMPTY, "rewards", "empty"),
    _case("no model for DR", _bad(reward_model=None), "reward_model", "got None"),
    _case(
        "reward out of range",
        _bad(rewards=np.array([1.0, 0.0, 1.5])),
        "rewards",
        "rewards[2] is 1.5",
        interval="betting",
    ),
    _case("alpha 0", _bad(), "alpha", "got 0.0", alpha=0.0),
    _case("alpha 1.5", _bad(), "alpha", "got 1.5", alpha=1.5),
    _case("n_bootstrap 0", _bad(), "n_bootstrap", "got 0", interval="bootstrap", n_bootstrap=0),
    _case("negative seed", _bad(), "seed", "got -1", interval="bootstrap", seed=-1),
    _case("unknown interval", _bad(), "interval", "got 'exact'", interval="exact"),
    _case("reversed range", _bad(), "reward_range", "(1.0, 0.0)", reward_range=(1.0, 0.0)),
    _case("one event wald", ONE_EVENT, "rewards", "at least 2 events, got 1"),
]


@pytest.mark.parametrize(("inputs", "options", "field", "shown"), VALIDATION_CASES)
def test_bad_input_raises_naming_the_argument(
    inputs: dict[str, Any], options: dict[str, Any], field: str, shown: str
) -> None:
    """Bad input raises InvalidArgument naming the argument and showing the bad value or shape."""
    estimator: Estimator = IPS() if options.get("interval") == "betting" else DR()
    with pytest.raises(InvalidArgument) as err:
        estimate(estimator, **inputs, **options)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert shown in str(err.value)


def test_validation_counts_further_offenders() -> None:
    """When several entries break a rule, the message shows the first and counts the rest."""
    with pytest.raises(InvalidArgument, match=r"propensities\[0\] is 0\.0.*\(2 more\)"):
        IPS().point(REWARDS, ACTIONS, np.zeros(3), TARGET)


def test_betting_needs_an_importance_weighted_estimator() -> None:
    """The betting interval is refused for model-based estimators, naming the interval."""
    with pytest.raises(InvalidArgument, match=r"interval: 'betting'.*dr"):
        estimate(DR(), *ARGS, interval="betting")


def test_self_normalised_estimate_undefined_without_support() -> None:
    """SNIPS raises (naming target_pmf) when the target gives 0 to every logged action."""
    target = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(InvalidArgument, match=r"target_pmf:.*probability 0 to every logged"):
        SNIPS().point(REWARDS, ACTIONS, PROPENSITIES, target)
    assert IPS().point(REWARDS, ACTIONS, PROPENSITIES, target) == 0.0


def test_estimator_argument_must_be_an_estimator() -> None:
    """Passing a name instead of an estimator instance raises naming `estimator`."""
    with pytest.raises(InvalidArgument, match="estimator: must be an Estimator, got 'IPS'"):
        estimate("IPS", *ARGS)  # type: ignore[arg-type]


def test_diagnostics_on_the_tiny_example() -> None:
    """ESS, max and mean weight and zero-support share are the hand-computed numbers."""
    d = diagnostics(ACTIONS, PROPENSITIES, TARGET)
    w = np.array([1.6, 2.0, 4 / 3])
    assert d.n == 3
    assert d.effective_sample_size == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert d.max_weight == pytest.approx(2.0)
    assert d.mean_weight == pytest.approx(w.mean())
    assert d.zero_support_share == 0.0
    assert d.unsupported_share is None and d.unsupported_mass is None


def test_diagnostics_support_with_the_logged_distribution() -> None:
    """With logged_pmf, target mass on actions the logger could not take is measured and warned."""
    actions = np.array([0, 0, 1, 1])
    propensities = np.array([1.0, 1.0, 0.5, 0.5])
    logged = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    target = np.array([[0.5, 0.5], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    d = diagnostics(actions, propensities, target, logged_pmf=logged)
    assert d.zero_support_share == pytest.approx(0.5)  # events 1 and 3
    assert d.unsupported_share == pytest.approx(0.5)  # events 0 and 1
    assert d.unsupported_mass == pytest.approx((0.5 + 1.0) / 4)
    assert any("could not choose" in w for w in d.warnings)


def test_diagnostics_warn_when_propensities_are_wrong() -> None:
    """Propensities logged at half their true value push the mean weight to ~2 and warn."""
    rng = np.random.default_rng(0)
    n, k = 5000, 4
    actions = rng.integers(0, k, n)
    target = rng.dirichlet(np.ones(k), n)
    honest = diagnostics(actions, np.full(n, 1 / k), target)
    assert honest.warnings == ()
    assert honest.mean_weight == pytest.approx(1.0, abs=0.05)
    wrong = diagnostics(actions, np.full(n, 0.5 / k), target)
    assert wrong.mean_weight == pytest.approx(2.0, abs=0.1)
    assert any(
        "mean importance weight" in w and "propensities may be wrong" in w for w in wrong.warnings
    )


def test_diagnostics_flag_mismatch_between_propensities_and_logged_pmf() -> None:
    """A propensity that is not the logged distribution's probability of that action is warned."""
    logged = np.array([[0.5, 0.5], [0.25, 0.75], [0.25, 0.75]])
    d = diagnostics(ACTIONS, PROPENSITIES, TARGET, logged_pmf=logged)
    assert any("propensities[1] = 0.25" in w and "logged_pmf[1, 1] = 0.75" in w for w in d.warnings)


def test_diagnostics_warn_on_small_effective_sample() -> None:
    """A handful of effective events triggers the small-ESS warning."""
    d = diagnostics(ACTIONS, PROPENSITIES, TARGET)
    assert any("effective sample size 2.9" in w for w in d.warnings)


def test_diagnostics_validate_their_inputs() -> None:
    """diagnostics names the bad argument like estimate does."""
    with pytest.raises(InvalidArgument, match=r"^propensities: .*propensities\[2\] is 2\.0"):
        diagnostics(ACTIONS, np.array([0.5, 0.5, 2.0]), TARGET)
    with pytest.raises(InvalidArgument, match=r"^logged_pmf: has shape \(3, 3\)"):
        diagnostics(ACTIONS, PROPENSITIES, TARGET, logged_pmf=np.full((3, 3), 1 / 3))
