"""The offline simulator: seeded runs, exact sampling and logging, delayed learning order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from bandit_server.core.policy import Pmf
from bandit_server.errors import InvalidArgument
from bandit_server.offline.environments import (
    SegmentEnvironment,
    SyntheticEnvironment,
)
from bandit_server.offline.simulate import PolicySpec, compare, simulate, simulate_log, summarize
from tests.helpers import replay

SQUARECB = "--cb_explore_adf --squarecb -q UA"
POLICIES = ["uniform", "oracle", "constant:2", SQUARECB]


@dataclass
class Recorder:
    """A policy with a fixed distribution that records what it is asked, in order."""

    probabilities: tuple[float, ...]
    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def args(self) -> str:
        return "recorder"

    def predict_one(self, dsjson_line: str) -> Pmf:
        self.events.append(("predict", dsjson_line[len('{"c":') : -1]))
        return list(enumerate(self.probabilities))

    def learn_one(self, dsjson_line: str) -> None:
        self.events.append(("learn", dsjson_line[dsjson_line.index(',"c":') + 5 : -1]))

    def serialize(self) -> bytes:
        return b""


def test_same_seed_gives_bit_identical_traces() -> None:
    """compare() on the same seed twice gives identical DataFrames; another seed differs."""
    env = SegmentEnvironment()
    first = compare(env, POLICIES, 600, seed=3, progress=False)
    second = compare(env, POLICIES, 600, seed=3, progress=False)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    other = compare(env, POLICIES, 600, seed=4, progress=False)
    assert not first.equals(other)


def test_every_policy_faces_the_same_rounds() -> None:
    """compare() runs each policy on the same contexts and the same ground truth."""
    trace = compare(SegmentEnvironment(), POLICIES, 300, seed=0, progress=False)
    per_policy = [group for _, group in trace.groupby("policy", sort=False)]
    assert [g["policy"].iloc[0] for g in per_policy] == POLICIES
    for group in per_policy[1:]:
        for column in ("round", "time", "segment", "best_expected_reward"):
            assert group[column].tolist() == per_policy[0][column].tolist()


def test_record_fields_are_consistent() -> None:
    """Rewards, regrets and their running sums agree with the environment's ground truth."""
    env = SegmentEnvironment()
    rounds = list(env.rounds(400, seed=9))
    trace = pd.DataFrame(simulate(env, SQUARECB, 400, seed=9))
    assert len(trace) == 400
    for record, round_ in zip(trace.itertuples(), rounds, strict=True):
        assert record.reward == round_.rewards[record.chosen]
        assert record.expected_reward == round_.expected_rewards[record.chosen]
        assert record.best_expected_reward == round_.expected_rewards.max()
        assert record.chose_best == (record.chosen == round_.best_action)
        assert record.action_id == f"v{record.chosen}"
    np.testing.assert_allclose(trace["cumulative_reward"], trace["reward"].cumsum())
    np.testing.assert_allclose(trace["cumulative_regret"], trace["regret"].cumsum())
    np.testing.assert_allclose(
        trace["regret"], trace["best_expected_reward"] - trace["expected_reward"]
    )


def test_builtin_policies_behave_as_named() -> None:
    """oracle never regrets, constant:i always picks i, uniform logs 1/k and spreads its picks."""
    trace = compare(SegmentEnvironment(), ["oracle", "constant:3", "uniform"], 3000, 1, False)
    oracle, constant, uniform = (
        trace[trace.policy == p] for p in ("oracle", "constant:3", "uniform")
    )
    assert oracle["regret"].eq(0).all() and oracle["chose_best"].all()
    assert constant["chosen"].eq(3).all() and constant["probability"].eq(1.0).all()
    assert uniform["probability"].eq(0.2).all()
    counts = np.bincount(uniform["chosen"], minlength=5)
    assert np.all(np.abs(counts / 3000 - 0.2) < 0.03)


def test_actions_are_drawn_exactly_from_the_policy_distribution() -> None:
    """The chosen action's frequency matches the policy's pmf, and its logged probability is
    exactly the pmf's entry for it."""
    pmf = (0.6, 0.25, 0.1, 0.05, 0.0)
    trace = pd.DataFrame(
        simulate(SegmentEnvironment(), PolicySpec(lambda: Recorder(pmf), "fixed"), 20_000, 0)
    )
    assert trace["probability"].tolist() == [pmf[c] for c in trace["chosen"]]
    frequencies = np.bincount(trace["chosen"], minlength=5) / len(trace)
    assert frequencies[4] == 0.0
    np.testing.assert_allclose(frequencies, pmf, atol=0.012)


def test_zero_delay_rewards_are_learned_before_the_next_decision() -> None:
    """Without delays the policy alternates: predict round t, learn round t, predict t+1."""
    recorder = Recorder((0.2,) * 5)
    list(simulate(SegmentEnvironment(), PolicySpec(lambda: recorder, "rec"), 50, 0))
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["predict", "learn"] * 49 + ["predict"]
    assert [c for _, c in recorder.events[0::2]] == [c for _, c in recorder.events[1::2]] + [
        recorder.events[-1][1]
    ]


def test_delayed_rewards_are_learned_in_arrival_order_once_arrived() -> None:
    """Each reward is learned, in order of arrival time (ties by round), just before the first
    decision made at or after its arrival, and never earlier."""
    env = SyntheticEnvironment(delay="exponential", delay_mean=6.0, seconds_between_rounds=1.0)
    n = 400
    recorder = Recorder((0.2,) * 5)
    trace = pd.DataFrame(simulate(env, PolicySpec(lambda: recorder, "rec"), n, seed=5))
    contexts: dict[str, int] = {}
    observed: list[tuple[str, int]] = []
    for kind, c_json in recorder.events:
        if kind == "predict":
            contexts[c_json] = len(contexts)
        observed.append((kind, contexts[c_json]))
    arrivals = sorted(zip(trace["reward_time"], trace["round"], strict=True))
    expected: list[tuple[str, int]] = []
    next_arrival = 0
    for t, time in enumerate(trace["time"]):
        while next_arrival < n and arrivals[next_arrival][0] <= time:
            expected.append(("learn", int(arrivals[next_arrival][1])))
            next_arrival += 1
        expected.append(("predict", t))
    assert observed == expected
    learned = [index for kind, index in observed if kind == "learn"]
    assert learned != sorted(learned)  # the delays really reorder the feedback
    assert n - len(learned) > 0  # rewards still in flight at the end are not learned


def test_learned_labels_carry_the_drawn_probability_and_cost() -> None:
    """The learned line has cost -reward and the logged probability of the chosen action."""
    recorder = Recorder((0.5, 0.5, 0.0, 0.0, 0.0))
    trace = pd.DataFrame(simulate(SegmentEnvironment(), PolicySpec(lambda: recorder, "r"), 30, 1))
    lines = list(
        simulate_log(
            SegmentEnvironment(),
            PolicySpec(lambda: Recorder((0.5, 0.5, 0.0, 0.0, 0.0)), "r"),
            30,
            1,
        )
    )
    for record, text in zip(trace.itertuples(), lines, strict=True):
        line = json.loads(text)
        assert line["_label_cost"] == -record.reward
        assert line["_label_probability"] == record.probability == 0.5
        assert line["_labelIndex"] == record.chosen == line["a"][0] - 1


def test_simulated_log_replays_exactly_through_a_fresh_vw() -> None:
    """The DSJSON log of a zero-delay VW run is complete: a fresh VW trained on it in order
    reproduces every logged distribution, as the service's own export does."""
    env = SyntheticEnvironment()
    args = "--cb_explore_adf --squarecb -q UA -q PA"
    lines = list(simulate_log(env, args, 500, seed=2))
    trace = pd.DataFrame(simulate(env, args, 500, seed=2))
    _, matched, learned = replay(args, lines)
    assert (matched, learned) == (500, 500)
    first = json.loads(lines[0])
    assert first["EventId"] == "sim-2-0"
    assert first["VWState"] == {"m": args}
    assert abs(sum(first["p"]) - 1.0) < 1e-12
    assert [json.loads(text)["a"][0] - 1 for text in lines] == trace["chosen"].tolist()


def test_summarize_averages_the_tail_and_totals_the_run() -> None:
    """summarize() reports tail averages over the last rounds and whole-run totals per policy."""
    trace = compare(SegmentEnvironment(), ["uniform", "oracle"], 200, 0, progress=False)
    table = summarize(trace, last=50)
    assert table.index.tolist() == ["uniform", "oracle"]
    uniform = trace[trace.policy == "uniform"]
    assert table.loc["uniform", "avg_reward"] == uniform["reward"].tail(50).mean()
    assert table.loc["uniform", "total_regret"] == uniform["regret"].sum()
    assert table.loc["oracle", "best_share"] == 1.0
    assert table.loc["oracle", "rounds"] == 200


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ("constant:x", "policy"),
        ("constant:9", "policy"),
        ("--cb_adf", "policy"),
        ("--cb_explore_adf --bogus", "policy"),
        ("--cb_explore_adf -d data.txt", "policy"),
    ],
)
def test_bad_policies_are_rejected_on_the_call(policy: str, field: str) -> None:
    """A bad policy string raises InvalidArgument naming it, before any round runs."""
    with pytest.raises(InvalidArgument) as caught:
        simulate(SegmentEnvironment(), policy, 10, 0)
    assert caught.value.field == field
    assert policy.split()[-1] in str(caught.value)


def test_bad_run_arguments_are_rejected() -> None:
    """Negative counts or seeds, repeated labels, empty lists and unlabelled factories fail."""
    env = SegmentEnvironment()
    with pytest.raises(InvalidArgument, match=r"^n: "):
        simulate(env, "uniform", -1, 0)
    with pytest.raises(InvalidArgument, match=r"^seed: "):
        simulate_log(env, "uniform", 1, -1)
    with pytest.raises(InvalidArgument, match=r"^policies\[1\]: label 'uniform' repeats"):
        compare(env, ["uniform", "uniform"], 5, 0, progress=False)
    with pytest.raises(InvalidArgument, match=r"^policies\[0\]: "):
        compare(env, ["--nope"], 5, 0, progress=False)
    with pytest.raises(InvalidArgument, match=r"^policies: "):
        compare(env, [], 5, 0, progress=False)
    with pytest.raises(InvalidArgument, match=r"^label: "):
        PolicySpec(lambda: Recorder((1.0,)))
    with pytest.raises(InvalidArgument, match=r"^last: "):
        summarize(compare(env, ["uniform"], 5, 0, progress=False), last=0)


def test_a_reward_arriving_exactly_at_a_decision_is_learned_before_it() -> None:
    """With every reward 2 s late and rounds 1 s apart, round t is learned just before t+2."""
    env = SyntheticEnvironment(delay="constant", delay_mean=2.0)
    recorder = Recorder((0.2,) * 5)
    list(simulate(env, PolicySpec(lambda: recorder, "rec"), 6, 0))
    predicted = [c for kind, c in recorder.events if kind == "predict"]
    expected = [("predict", predicted[0]), ("predict", predicted[1])]
    for t in range(2, 6):
        expected += [("learn", predicted[t - 2]), ("predict", predicted[t])]
    assert recorder.events == expected
