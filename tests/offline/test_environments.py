"""Simulation environments: ground truth, seeding, validation, and that they are learnable."""

from __future__ import annotations

import numpy as np
import pytest

from bandit_server.core.dsjson import Label, context_json, learning_line, prediction_line
from bandit_server.core.sampling import draw
from bandit_server.core.types import action_from_mapping, namespaces_from_mapping
from bandit_server.errors import InvalidArgument
from bandit_server.learners.vw import VWPolicy
from bandit_server.offline.environments import (
    ContextNamespace,
    Environment,
    Round,
    SegmentEnvironment,
    SyntheticEnvironment,
)


def _fields(round_: Round) -> tuple[object, ...]:
    return (
        round_.index,
        round_.time,
        round_.context,
        round_.actions,
        round_.expected_rewards.tobytes(),
        round_.rewards.tobytes(),
        round_.delays.tobytes(),
        round_.best_action,
        round_.info,
    )


def _trace(env: Environment, n: int, seed: int) -> list[tuple[object, ...]]:
    return [_fields(r) for r in env.rounds(n, seed)]


def test_segment_rounds_repeat_bit_for_bit_for_a_seed() -> None:
    """The same seed gives identical rounds; another seed gives different ones."""
    env = SegmentEnvironment()
    assert _trace(env, 300, seed=5) == _trace(env, 300, seed=5)
    assert _trace(env, 300, seed=5) != _trace(env, 300, seed=6)


def test_segment_longer_run_extends_shorter_one() -> None:
    """The first m rounds of a run of n > m rounds are the run of m rounds (across blocks)."""
    env = SegmentEnvironment()
    assert _trace(env, 2500, seed=1)[:1500] == _trace(env, 1500, seed=1)


def test_segment_ground_truth_matches_the_draws() -> None:
    """Segments are uniform and each variant's click frequency converges to its declared rate."""
    env = SegmentEnvironment()
    rounds = list(env.rounds(30_000, seed=3))
    rates = np.array(env.click_rates)
    for s in range(env.n_segments):
        mine = [r for r in rounds if r.info["segment"] == f"s{s}"]
        assert abs(len(mine) / len(rounds) - 1 / 3) < 0.015
        clicks = np.mean([r.rewards for r in mine], axis=0)
        np.testing.assert_allclose(clicks, rates[s], atol=0.025)
        assert all(r.best_action == (2 * s) % 5 for r in mine)
        assert all(r.context == {"User": {"segment": f"s{s}"}} for r in mine)
    assert all(r.time == r.index for r in rounds[:10])
    assert not rounds[0].delays.any()
    assert rounds[0].actions[1] == {"id": "v1", "features": {"Action": {"variant": "v1"}}}


def test_segment_default_rates_put_each_segments_best_at_0_6() -> None:
    """Default rates: segment s's best is variant 2s mod 5 at 0.6, the others in [0.1, 0.2]."""
    env = SegmentEnvironment()
    assert env.click_rates is not None
    for s, row in enumerate(env.click_rates):
        assert int(np.argmax(row)) == (2 * s) % 5
        assert max(row) == 0.6
        assert all(0.1 <= rate <= 0.2 for v, rate in enumerate(row) if v != (2 * s) % 5)


def test_round_arrays_are_read_only() -> None:
    """A consumer cannot change a round's ground truth in place."""
    round_ = next(SegmentEnvironment().rounds(1, seed=0))
    with pytest.raises(ValueError):
        round_.rewards[0] = 5.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_segments": 0}, "n_segments"),
        ({"n_variants": 1}, "n_variants"),
        ({"seconds_between_rounds": 0.0}, "seconds_between_rounds"),
        ({"n_segments": 2, "n_variants": 2, "click_rates": ((0.5, 0.5),)}, "click_rates"),
        ({"n_segments": 1, "n_variants": 2, "click_rates": ((0.5,),)}, "click_rates[0]"),
        ({"n_segments": 1, "n_variants": 2, "click_rates": ((0.5, 1.5),)}, "click_rates[0][1]"),
    ],
)
def test_segment_settings_are_validated(kwargs: dict[str, object], field: str) -> None:
    """A bad constructor argument raises InvalidArgument naming that field."""
    with pytest.raises(InvalidArgument) as caught:
        SegmentEnvironment(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(("n", "seed", "field"), [(-1, 0, "n"), (10, -3, "seed"), (1.5, 0, "n")])
def test_rounds_arguments_are_validated(n: int, seed: int, field: str) -> None:
    """A negative or non-integer count or seed raises InvalidArgument naming it."""
    with pytest.raises(InvalidArgument) as caught:
        next(SegmentEnvironment().rounds(n, seed))
    assert caught.value.field == field


def test_squarecb_learns_each_segments_best_variant() -> None:
    """Online squarecb with -q UA picks the segment's best variant >= 80% of the last 1,000 of
    6,000 events: the service's acceptance criterion is reachable in this environment."""
    env = SegmentEnvironment()
    policy = VWPolicy("--cb_explore_adf --squarecb -q UA")
    rng = np.random.default_rng(11)
    actions = tuple(action_from_mapping(a) for a in env.actions())
    best_in_tail = 0
    for round_ in env.rounds(6000, seed=7):
        c_json = context_json(namespaces_from_mapping(round_.context), actions)
        ranking, probabilities = draw(policy.predict_one(prediction_line(c_json)), rng.random())
        chosen = ranking[0]
        reward = float(round_.rewards[chosen])
        policy.learn_one(learning_line(c_json, Label(chosen, probabilities[0], -reward)))
        if round_.index >= 5000:
            best_in_tail += chosen == round_.best_action
    assert best_in_tail >= 800, best_in_tail


def test_synthetic_rounds_repeat_and_extend_for_a_seed() -> None:
    """Same seed, identical rounds; another seed differs; a longer run extends a shorter one."""
    env = SyntheticEnvironment(delay="exponential", delay_mean=3.0, drift_at=700)
    assert _trace(env, 1200, seed=2) == _trace(env, 1200, seed=2)
    assert _trace(env, 1200, seed=2) != _trace(env, 1200, seed=3)
    assert _trace(env, 1200, seed=2)[:1100] == _trace(env, 1100, seed=2)


def test_synthetic_instance_seed_picks_the_problem_not_the_sample() -> None:
    """The run seed changes contexts and draws, the instance seed changes the reward model."""
    first = next(SyntheticEnvironment().rounds(1, seed=0))
    other = next(SyntheticEnvironment(instance_seed=1).rounds(1, seed=0))
    assert first.context == other.context
    assert not np.array_equal(first.expected_rewards, other.expected_rewards)
    assert SyntheticEnvironment().actions() == first.actions


def test_synthetic_context_and_actions_follow_the_declared_features() -> None:
    """Namespaces hold x<j> numbers and c<j> levels as declared; actions have ids and features."""
    env = SyntheticEnvironment(
        n_actions=3,
        context=(ContextNamespace("User", numeric=2, categorical=(3, 2)), ContextNamespace("T", 1)),
        action_numeric=1,
    )
    rounds = list(env.rounds(500, seed=0))
    assert all(set(r.context) == {"User", "T"} for r in rounds)
    assert all(set(r.context["User"]) == {"x0", "x1", "c0", "c1"} for r in rounds)
    assert {r.context["User"]["c0"] for r in rounds} == {"l0", "l1", "l2"}
    assert {r.context["User"]["c1"] for r in rounds} == {"l0", "l1"}
    assert env.context_dim == 2 + 3 + 2 + 1
    assert [a["id"] for a in rounds[0].actions] == ["a0", "a1", "a2"]
    assert set(rounds[0].actions[2]["features"]["Action"]) == {"action", "f0"}
    assert all(len(r.expected_rewards) == 3 for r in rounds)


@pytest.mark.parametrize("reward", ["linear", "interaction"])
def test_synthetic_real_rewards_average_to_their_expectation(reward: str) -> None:
    """Realised rewards (noise clipped to the range) average to the declared expected rewards."""
    env = SyntheticEnvironment(reward=reward, noise=0.3)  # type: ignore[arg-type]
    rounds = list(env.rounds(20_000, seed=4))
    rewards = np.array([r.rewards for r in rounds])
    expected = np.array([r.expected_rewards for r in rounds])
    assert rewards.min() >= 0.0
    assert rewards.max() <= 1.0
    assert (rewards == 1.0).any()  # the clipping is exercised
    # Per action, the mean residual is within ~4 standard errors of 0.
    residual = (rewards - expected).mean(axis=0)
    assert np.all(np.abs(residual) < 4 * 0.3 / np.sqrt(len(rounds)))
    assert all(r.best_action == int(np.argmax(r.expected_rewards)) for r in rounds)


def test_synthetic_unclipped_rewards_leave_the_range_and_say_so() -> None:
    """Without clipping, rewards are mean + Gaussian noise and the declared bounds widen."""
    env = SyntheticEnvironment(noise=0.5, clip_rewards=False)
    rewards = np.array([r.rewards for r in env.rounds(2000, seed=0)])
    assert rewards.min() < 0.0 < 1.0 < rewards.max()
    assert env.reward_bounds == (-np.inf, np.inf)
    assert SyntheticEnvironment().reward_bounds == (0.0, 1.0)


def test_synthetic_logistic_rewards_are_bernoulli_with_the_sigmoid_mean() -> None:
    """Logistic rewards are the range's two ends, with frequencies matching the expectation."""
    env = SyntheticEnvironment(reward="logistic", noise=0.0, reward_range=(-1.0, 1.0))
    rounds = list(env.rounds(20_000, seed=5))
    rewards = np.array([r.rewards for r in rounds])
    expected = np.array([r.expected_rewards for r in rounds])
    assert set(np.unique(rewards)) == {-1.0, 1.0}
    assert np.all(np.abs((rewards - expected).mean(axis=0)) < 4 / np.sqrt(len(rounds)))


def test_interaction_rewards_depend_on_context_action_products_only() -> None:
    """Interaction rewards are context-weighted sums of the action's features (so, across
    actions, they span no more dimensions than the action features), and the best one varies."""
    env = SyntheticEnvironment(reward="interaction", noise=0.0, action_indicator=False)
    rounds = list(env.rounds(2000, seed=0))
    scores = np.array([r.expected_rewards for r in rounds]) - 0.5
    features = np.array([[a["features"]["Action"]["f0"], a["features"]["Action"]["f1"]]
                         for a in rounds[0].actions])  # fmt: skip
    unclipped = scores[np.abs(scores).max(axis=1) < 0.5 - 1e-9]
    assert len(unclipped) > 1000
    assert np.linalg.matrix_rank(unclipped, tol=1e-3) == 2
    assert np.linalg.matrix_rank(features) == 2
    assert len({r.best_action for r in rounds}) >= 2


def test_drift_changes_the_reward_parameters_and_the_best_action() -> None:
    """From drift_at on, the expected rewards come from a second draw: the best action changes
    for many contexts, while earlier rounds are untouched."""
    steady = list(SyntheticEnvironment().rounds(2000, seed=1))
    drifting = list(SyntheticEnvironment(drift_at=1000).rounds(2000, seed=1))
    assert _fields(steady[999]) == _fields(drifting[999])
    assert all(r.info["phase"] == int(r.index >= 1000) for r in drifting)
    after = [(a.best_action, b.best_action) for a, b in zip(steady, drifting, strict=True)][1000:]
    assert sum(a != b for a, b in after) / len(after) > 0.5
    assert steady[1500].context == drifting[1500].context


def test_delays_follow_the_declared_distribution() -> None:
    """Exponential delays have the declared mean per action; constant ones are exact; none is 0."""
    exponential = SyntheticEnvironment(delay="exponential", delay_mean=4.0)
    delays = np.array([r.delays for r in exponential.rounds(20_000, seed=0)])
    assert delays.min() >= 0.0
    np.testing.assert_allclose(delays.mean(axis=0), 4.0, rtol=0.05)
    constant = SyntheticEnvironment(delay="constant", delay_mean=2.5)
    assert all(np.all(r.delays == 2.5) for r in constant.rounds(10, seed=0))
    assert all(not r.delays.any() for r in SyntheticEnvironment().rounds(10, seed=0))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_actions": 1}, "n_actions"),
        ({"context": ()}, "context"),
        ({"context": (ContextNamespace("U", 1), ContextNamespace("U", 2))}, "context[1].name"),
        ({"reward": "cubic"}, "reward"),
        ({"reward": "interaction", "action_numeric": 0}, "action_numeric"),
        ({"action_numeric": 0, "action_indicator": False}, "action_indicator"),
        ({"noise": -0.1}, "noise"),
        ({"reward": "logistic"}, "noise"),
        ({"signal": 0.0}, "signal"),
        ({"reward_range": (1.0, 1.0)}, "reward_range"),
        ({"drift_at": 0}, "drift_at"),
        ({"delay": "gamma", "delay_mean": 1.0}, "delay"),
        ({"delay": "exponential"}, "delay_mean"),
        ({"delay_mean": 3.0}, "delay_mean"),
        ({"seconds_between_rounds": -1.0}, "seconds_between_rounds"),
        ({"instance_seed": -1}, "instance_seed"),
    ],
)
def test_synthetic_settings_are_validated(kwargs: dict[str, object], field: str) -> None:
    """A bad constructor argument raises InvalidArgument naming that field and value."""
    with pytest.raises(InvalidArgument) as caught:
        SyntheticEnvironment(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "_x", "numeric": 1}, "name"),
        ({"name": "Action", "numeric": 1}, "name"),
        ({"name": "U", "numeric": -1}, "numeric"),
        ({"name": "U"}, "numeric"),
        ({"name": "U", "categorical": (3, 1)}, "categorical[1]"),
    ],
)
def test_context_namespace_is_validated(kwargs: dict[str, object], field: str) -> None:
    """A bad namespace declaration raises InvalidArgument naming the field."""
    with pytest.raises(InvalidArgument) as caught:
        ContextNamespace(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
