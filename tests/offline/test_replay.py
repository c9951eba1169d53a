"""Counterfactual replay agrees with VW's own driver, and fixed candidates give their pmfs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bandit_server.core.dsjson import prediction_line
from bandit_server.errors import InvalidArgument
from bandit_server.learners.vw import VWPolicy, driver_summary, run_vw_command_line
from bandit_server.offline.dataset import LoggedDataset, load_dsjson
from bandit_server.offline.evaluation import EvaluationSettings, evaluate
from bandit_server.offline.replay import (
    ConstantAction,
    FirstAction,
    LoggedPolicy,
    UniformRandom,
    VWLearner,
    parse_candidate,
    replay,
    reward_model,
)
from tests.offline.logs import SEGMENTS, click_rate, make_log

# VW prints its average loss and its predictions with 6 decimals.
PRINTED = 5e-7

VW_ARGS = [
    "--cb_explore_adf --epsilon 0.2 --cb_type ips",
    "--cb_explore_adf --epsilon 0.1 --cb_type mtr -q UA",
    "--cb_explore_adf --cb_type dr --epsilon 0.05 -q ::",
    "--cb_explore_adf --squarecb --gamma_scale 10 -q UA",
    "--cb_explore_adf --cover 3 -q UA",
    "--cb_explore_adf --bag 3 --epsilon 0.1",
    "--cb_explore_adf --softmax --lambda 5 -q UA",
]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "log.json"
    path.write_text("\n".join(make_log(1500, seed=11)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dataset(log_file: Path) -> LoggedDataset:
    return load_dsjson(log_file)


def ips_cost(data: LoggedDataset, pmf: np.ndarray) -> float:
    """VW's loss for --cb_explore_adf: mean over labelled events of pi(a_t) * cost_t / p_t."""
    m = data.learnable
    chosen = pmf[np.arange(len(data)), data.actions][m]
    return float(np.mean(chosen * -data.rewards[m] / data.propensities[m]))


@pytest.mark.parametrize("args", VW_ARGS)
def test_replay_matches_vw_drivers_progressive_loss_and_predictions(
    args: str, log_file: Path, dataset: LoggedDataset, tmp_path: Path
) -> None:
    """Our replay's IPS cost equals the driver's average loss and every pmf equals its -p output."""
    output, _ = run_vw_command_line(
        ["--dsjson", "-d", str(log_file), *args.split(), "-p", str(tmp_path / "p.txt")]
    )
    summary = driver_summary(output)
    result = replay(dataset, [VWLearner(args)], progress=False)
    pmf = result.pmfs[VWLearner(args).name]

    # VW's DSJSON reader drops _skipLearn lines: they are neither examples nor in the loss.
    assert summary["examples"] == int(dataset.learnable.sum())
    vw_loss = summary["average_loss"]
    ours = ips_cost(dataset, pmf)
    assert abs(ours - vw_loss) <= PRINTED + 1e-6 * abs(vw_loss)

    printed = [line for line in (tmp_path / "p.txt").read_text().splitlines() if line.strip()]
    learned_rows = np.flatnonzero(dataset.learnable)
    assert len(printed) == len(learned_rows)
    for row, text in zip(learned_rows, printed, strict=True):
        theirs = np.zeros(dataset.k)
        for pair in text.split(","):
            index, prob = pair.split(":")
            theirs[int(index)] = float(prob)
        np.testing.assert_allclose(pmf[row], theirs, rtol=0, atol=PRINTED)


@pytest.mark.parametrize("args", [VW_ARGS[1], VW_ARGS[4]])
def test_final_model_predicts_exactly_as_the_drivers_model(
    args: str, log_file: Path, dataset: LoggedDataset, tmp_path: Path
) -> None:
    """After replay, our model and the driver's `-f` model give identical pmfs on every line."""
    run_vw_command_line(
        ["--dsjson", "-d", str(log_file), *args.split(), "-f", str(tmp_path / "m.vw"), "--quiet"]
    )
    result = replay(dataset, [VWLearner(args)], progress=False)
    ours = VWPolicy(args, result.models[VWLearner(args).name])
    theirs = VWPolicy(args, (tmp_path / "m.vw").read_bytes())
    for c_json in dataset.c_jsons[:300]:
        line = prediction_line(c_json)
        assert ours.predict_one(line) == theirs.predict_one(line)


def test_skipped_events_are_predicted_but_never_learned(dataset: LoggedDataset) -> None:
    """Replay over the full log leaves the model a replay of only the learnable events leaves."""
    args = VW_ARGS[1]
    full = replay(dataset, [VWLearner(args)], progress=False)
    learnable = dataset.subset(np.flatnonzero(dataset.learnable))
    only = replay(learnable, [VWLearner(args)], progress=False)
    name = VWLearner(args).name
    np.testing.assert_array_equal(full.pmfs[name][dataset.learnable], only.pmfs[name])
    assert np.all(full.pmfs[name][~dataset.learnable].sum(axis=1) > 0.99)


def test_replay_is_deterministic_for_randomised_explorers(dataset: LoggedDataset) -> None:
    """Bagging and cover use VW's own seeded randomness: two replays are bit-identical."""
    candidates = [VWLearner("--cb_explore_adf --bag 4"), VWLearner("--cb_explore_adf --cover 2")]
    first = replay(dataset, candidates, progress=False)
    second = replay(dataset, candidates, progress=False)
    for name in first.names:
        np.testing.assert_array_equal(first.pmfs[name], second.pmfs[name])
        assert first.models[name] == second.models[name]


def test_parallel_replay_equals_sequential_replay(dataset: LoggedDataset) -> None:
    """Replaying in two forked workers gives the same pmfs and models, bit for bit."""
    candidates = [VWLearner(args) for args in VW_ARGS[:3]] + [UniformRandom()]
    one = replay(dataset, candidates, progress=False)
    two = replay(dataset, candidates, progress=False, workers=2)
    assert one.names == two.names
    for name in one.names:
        np.testing.assert_array_equal(one.pmfs[name], two.pmfs[name])
    assert one.models == two.models
    with pytest.raises(InvalidArgument, match="workers"):
        replay(dataset, candidates, workers=0)


def test_a_constant_index_that_no_event_has_is_refused(dataset: LoggedDataset) -> None:
    """Past every event's actions, 'constant' would score the first action under its own
    name; the error gives the 0-based range instead."""
    k = int(dataset.n_actions.max())
    with pytest.raises(InvalidArgument, match=rf"constant:{k}'.* more than {k} actions.* 0 to"):
        replay(dataset, [ConstantAction(k)], progress=False)
    replay(dataset, [ConstantAction(k - 1)], progress=False)


def test_fixed_candidates_give_their_distributions(dataset: LoggedDataset) -> None:
    """Logged = logged p; baseline = first action; uniform over each event's actions; constant
    falls back to the first action where the index does not exist."""
    result = replay(
        dataset, [LoggedPolicy(), FirstAction(), UniformRandom(), ConstantAction(4)], progress=False
    )
    np.testing.assert_array_equal(result.pmfs["online (logged)"], dataset.logged_pmf)
    assert np.all(result.pmfs["baseline (first action)"][:, 0] == 1.0)
    uniform = result.pmfs["uniform random"]
    for i in range(len(dataset)):
        n = dataset.n_actions[i]
        np.testing.assert_allclose(uniform[i, :n], 1.0 / n)
        assert np.all(uniform[i, n:] == 0)
    constant = result.pmfs["constant action 4"]
    has_five = dataset.n_actions >= 5
    assert has_five.any() and (~has_five).any()
    assert np.all(constant[has_five, 4] == 1.0)
    assert np.all(constant[~has_five, 0] == 1.0)
    for pmf in result.pmfs.values():
        np.testing.assert_allclose(pmf.sum(axis=1), 1.0)


def test_reward_model_never_sees_the_event_it_predicts() -> None:
    """Changing event i's reward changes predictions only after i: they are progressive."""
    lines = make_log(300, seed=5, skip_share=0.0)
    base = load_dsjson(lines)
    cost = "-1.0" if '"_label_cost":-0.0' in lines[150] else "-0.0"
    flipped_line = re.sub(r'"_label_cost":-?[0-9.]+', f'"_label_cost":{cost}', lines[150])
    flipped = load_dsjson([*lines[:150], flipped_line, *lines[151:]])
    assert base.rewards[150] != flipped.rewards[150]
    q_base = reward_model(base, progress=False)
    q_flip = reward_model(flipped, progress=False)
    np.testing.assert_array_equal(q_base[:151], q_flip[:151])
    assert not np.array_equal(q_base[151:], q_flip[151:])


def test_reward_model_is_clipped_and_padded() -> None:
    """Predictions lie in the reward range and are zero beyond an event's actions."""
    data = load_dsjson(make_log(300, seed=6, min_actions=2, max_actions=5))
    q = reward_model(data, reward_range=(0.0, 1.0), progress=False)
    assert q.shape == (len(data), data.k)
    assert q.min() >= 0.0 and q.max() <= 1.0
    assert np.all(q[np.arange(data.k)[None, :] >= data.n_actions[:, None]] == 0.0)


def test_candidates_are_parsed_and_validated() -> None:
    """Keywords map to fixed candidates; VW lines are validated; names must be unique."""
    assert parse_candidate("logged") == LoggedPolicy()
    assert parse_candidate("baseline") == FirstAction()
    assert parse_candidate("uniform") == UniformRandom()
    assert parse_candidate("constant:2") == ConstantAction(2)
    assert parse_candidate("--cb_explore_adf --epsilon 0.1").name == (
        "--cb_explore_adf --epsilon 0.1"
    )
    with pytest.raises(InvalidArgument, match="policy"):
        parse_candidate("--cb_adf")
    with pytest.raises(InvalidArgument, match="'constant:' needs"):
        parse_candidate("constant:x")
    with pytest.raises(InvalidArgument, match=r"policies\[1\]: name 'uniform random' repeats"):
        replay(load_dsjson(make_log(5, seed=1)), [UniformRandom(), UniformRandom()])


def test_ips_through_the_estimators_equals_vws_reported_loss(
    log_file: Path, dataset: LoggedDataset
) -> None:
    """evaluate()'s IPS value of a VW policy is minus the driver's average loss."""
    args = VW_ARGS[1]
    output, _ = run_vw_command_line(["--dsjson", "-d", str(log_file), *args.split()])
    result = evaluate(
        dataset, [VWLearner(args)], EvaluationSettings(estimators=("IPS",)), progress=False
    )
    vw_loss = driver_summary(output)["average_loss"]
    value = result.row(VWLearner(args).name).value
    assert abs(-value - vw_loss) <= PRINTED + 1e-6 * abs(vw_loss)
    assert result.n_estimated == int(dataset.learnable.sum())
    assert result.n_skipped == dataset.n_skipped > 0


def test_estimates_cover_the_true_value_of_a_fixed_policy() -> None:
    """On a log with known click rates, IPS, SNIPS, DR and SNDR intervals of 'always action 0'
    contain its true value."""
    data = load_dsjson(make_log(4000, seed=21, skip_share=0.05))
    truth = float(np.mean([click_rate(s, 0) for s in range(SEGMENTS)]))
    settings = EvaluationSettings(estimators=("DR", "IPS", "SNIPS", "SNDR"))
    result = evaluate(data, [ConstantAction(0)], settings, progress=False)
    for name in settings.estimators:
        row = result.row("constant action 0", name)
        assert row.lower <= truth <= row.upper, (name, row)


def test_the_logged_policy_is_the_reference_with_zero_difference(dataset: LoggedDataset) -> None:
    """The logged policy is added first; its paired difference to itself is exactly 0."""
    result = evaluate(dataset, [UniformRandom()], progress=False)
    assert result.names() == ["online (logged)", "uniform random"]
    for row in result.table():
        if row.policy == "online (logged)":
            assert (row.difference, row.difference_lower, row.difference_upper) == (0, 0, 0)


def test_paired_difference_is_the_difference_of_estimates_and_tighter(
    dataset: LoggedDataset,
) -> None:
    """The difference equals value - logged value, and its interval is narrower than the sum
    of the two half-widths (the events are shared)."""
    args = VW_ARGS[0]
    result = evaluate(dataset, [VWLearner(args)], progress=False)
    for estimator in result.settings.estimators:
        row = result.row(VWLearner(args).name, estimator)
        logged = result.row(result.reference, estimator)
        assert row.difference == pytest.approx(row.value - logged.value, abs=1e-12)
        paired = row.difference_upper - row.difference_lower
        unpaired = (row.upper - row.lower) + (logged.upper - logged.lower)
        assert 0 < paired < unpaired


def test_bootstrap_differences_are_seeded() -> None:
    """The paired bootstrap repeats bit for bit with a seed and moves with another seed."""
    data = load_dsjson(make_log(600, seed=2))
    candidates = [UniformRandom(), FirstAction()]
    runs = [
        evaluate(
            data,
            candidates,
            EvaluationSettings(interval="bootstrap", n_bootstrap=200, seed=seed),
            progress=False,
        )
        for seed in (1, 1, 2)
    ]
    first, again, other = (
        [(r.difference_lower, r.difference_upper) for r in run.rows] for run in runs
    )
    assert first == again
    assert first != other


def test_cumulative_curve_ends_at_the_estimate(dataset: LoggedDataset) -> None:
    """The curve's last point is the primary estimate over all events (SNIPS and DR alike)."""
    for primary in ("SNIPS", "DR"):
        settings = EvaluationSettings(estimators=(primary,))
        result = evaluate(dataset, [UniformRandom()], settings, progress=False)
        for row in result.table():
            curve = result.curves[row.policy]
            assert len(curve) == result.n_estimated
            assert curve[-1] == pytest.approx(row.value, rel=1e-9)


def test_time_order_replays_in_timestamp_order() -> None:
    """order='time' evaluates the log sorted by Timestamp, not as the file lists it."""
    lines = make_log(400, seed=4, skip_share=0.0)
    shuffled = [lines[i] for i in np.random.default_rng(0).permutation(len(lines))]
    args = "--cb_explore_adf --epsilon 0.1"
    in_order = evaluate(load_dsjson(lines), [VWLearner(args)], progress=False)
    by_time = evaluate(
        load_dsjson(shuffled), [VWLearner(args)], EvaluationSettings(order="time"), progress=False
    )
    assert by_time.row(args).value == in_order.row(args).value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"estimators": ()}, "estimators"),
        ({"estimators": ("XX",)}, "estimators[0]"),
        ({"estimators": ("IPS", "IPS")}, "estimators[1]"),
        ({"interval": "nope"}, "interval"),
        ({"alpha": 1.5}, "alpha"),
        ({"n_bootstrap": 0}, "n_bootstrap"),
        ({"reward_range": (1.0, 0.0)}, "reward_range"),
        ({"order": "random"}, "order"),
        ({"reward_model_args": "--cb_explore_adf"}, "reward_model"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    """Every invalid setting raises InvalidArgument naming it."""
    with pytest.raises(InvalidArgument) as info:
        EvaluationSettings(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_logs_with_rounded_probabilities_evaluate() -> None:
    """A log whose p are rounded to 4 decimals (as some exports do) still evaluates."""
    rounded = []
    for text in make_log(300, seed=12, skip_share=0.0):
        line = json.loads(text)
        line["p"] = [round(p, 4) or 0.0001 for p in line["p"]]
        line["_label_probability"] = line["p"][0]
        rounded.append(json.dumps(line, separators=(",", ":")))
    data = load_dsjson(rounded)
    result = evaluate(data, [VWLearner(VW_ARGS[0]), UniformRandom()], progress=False)
    assert all(np.isfinite(row.value) for row in result.rows)
