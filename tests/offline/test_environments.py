"""Simulation environments: ground truth, seeding, validation, and that they are learnable."""

from __future__ import annotations

import numpy as np
import pytest

from bandit_server.core.dsjson import Label, context_json, learning_line, prediction_line
from bandit_server.core.sampling import draw
from bandit_server.core.types import action_from_mapping, namespaces_from_mapping
from bandit_server.errors import InvalidArgument
from bandit_server.learners.vw import VWPolicy
from bandit_server.offline.environments import Environment, Round, SegmentEnvironment


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
