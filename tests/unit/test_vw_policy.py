"""The contract every VW command line must meet behind the Policy protocol, and vw_args checks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bandit_server.core.dsjson import Label, context_json, learning_line, prediction_line
from bandit_server.core.types import Action, namespaces_from_mapping
from bandit_server.errors import InvalidArgument
from bandit_server.learners.vw import (
    DEFAULT_VW_ARGS,
    VWPolicy,
    interaction_order,
    number_bound,
    resumable,
    validate_args,
)

EXPLORERS = [
    "--cb_explore_adf --epsilon 0.1",
    "--cb_explore_adf --squarecb",
    "--cb_explore_adf --cover 3",
    "--cb_explore_adf --bag 3",
    "--cb_explore_adf --softmax --lambda 5",
    "--cb_explore_adf --regcb",
    "--cb_explore_adf --synthcover",
    "--cb_explore_adf --rnd 3",
    "--cb_explore_adf --cb_dro",
]
VW_ARGS = [args + quadratics for args in EXPLORERS for quadratics in ("", " -q ::")]
N_ACTIONS = 4


def _examples(n: int, seed: int) -> list[tuple[str, str]]:
    """(prediction line, learning line) pairs: 3 segments, 4 actions, segment-dependent costs."""
    rng = random.Random(seed)
    actions = tuple(
        Action(f"a{k}", namespaces_from_mapping({"Action": {"variant": f"v{k}", "k": float(k)}}))
        for k in range(N_ACTIONS)
    )
    out = []
    for _ in range(n):
        segment = rng.randrange(3)
        context = namespaces_from_mapping(
            {"User": {"segment": f"s{segment}", "age": float(rng.randint(18, 80)), "new": True}}
        )
        c_json = context_json(context, actions)
        chosen = rng.randrange(N_ACTIONS)
        cost = -1.0 if rng.random() < (0.8 if chosen == segment else 0.2) else 0.0
        label = Label(chosen, 1 / N_ACTIONS, cost)
        out.append((prediction_line(c_json), learning_line(c_json, label)))
    return out


EXAMPLES = _examples(60, seed=7)
PROBES = [probe for probe, _ in EXAMPLES]
LINES = [line for _, line in EXAMPLES]


def _trained(args: str, lines: list[str]) -> VWPolicy:
    policy = VWPolicy(args)
    for line in lines:
        policy.learn_one(line)
    return policy


def _predictions(policy: VWPolicy) -> list[list[tuple[int, float]]]:
    return [policy.predict_one(probe) for probe in PROBES]


@pytest.mark.parametrize("args", VW_ARGS)
def test_predictions_are_probability_distributions(args: str) -> None:
    """Before and after learning, every action gets one non-negative probability; they sum to 1."""
    policy = VWPolicy(args)
    for state in ("fresh", "trained"):
        for pmf in _predictions(policy):
            assert sorted(index for index, _ in pmf) == list(range(N_ACTIONS)), state
            assert all(p >= 0 for _, p in pmf), (state, pmf)
            assert abs(sum(p for _, p in pmf) - 1) <= 1e-6, (state, pmf)
        for line in LINES:
            policy.learn_one(line)


@pytest.mark.parametrize("args", VW_ARGS)
def test_input_lines_are_not_mutated(args: str) -> None:
    """Predicting and learning leave the given line texts (and the list of them) unchanged."""
    lines = ["".join(line) for line in LINES]  # fresh objects, compared against the originals
    snapshot = list(lines)
    policy = _trained(args, lines)
    for probe in PROBES:
        text = "".join(probe)
        policy.predict_one(text)
        assert text == probe
    assert lines == snapshot == LINES


@pytest.mark.parametrize("args", VW_ARGS)
def test_two_policies_fed_the_same_lines_predict_identically(args: str) -> None:
    """VW is deterministic: the same command line and lines give bit-identical predictions."""
    assert _predictions(_trained(args, LINES)) == _predictions(_trained(args, LINES))


@pytest.mark.parametrize("args", VW_ARGS)
def test_learn_then_predict_learns_as_learn_and_predicts_as_a_fresh_parse(args: str) -> None:
    """The learner checks each event by predicting on the examples it just learned: that
    prediction equals one on the prediction line, and the predictions do not change what the
    model learns (the exported log must still rebuild it)."""
    checked, plain = VWPolicy(args), VWPolicy(args)
    for probe, line in EXAMPLES:
        after = checked.learn_then_predict_one(line)
        plain.learn_one(line)
        assert after == plain.predict_one(probe)
    assert _predictions(checked) == _predictions(_trained(args, LINES))


@pytest.mark.parametrize("args", VW_ARGS)
def test_serialize_then_load_predicts_exactly_the_same(args: str) -> None:
    """A model restored from serialize() bytes predicts exactly as the original."""
    policy = _trained(args, LINES)
    restored = VWPolicy.load(args, policy.serialize())
    assert restored.args == args
    assert _predictions(restored) == _predictions(policy)


# With these lines (seed 7) a resumed --bag/--cover/--rnd/--cb_dro model drifts from the
# continuous one; the base learner (--cb_adf) resumes bit for bit, so the lost state is in VW's
# explorers.
_RESUME_BUG = pytest.mark.xfail(
    strict=True,
    reason="VW limitation: for --bag, --cover -q ::, --rnd and --cb_dro, a model "
    "restored from serialize() "
    "and fed the remaining lines predicts differently from one that learned all lines without "
    "a break; the engine therefore rebuilds such models from the whole log (vw.resumable)",
)
NOT_RESUMABLE = {
    "--cb_explore_adf --cover 3 -q ::",
    "--cb_explore_adf --bag 3",
    "--cb_explore_adf --bag 3 -q ::",
    # Found by an audit: these learn deterministically, but not across a reload.
    *(f"--cb_explore_adf {x}{q}" for x in ("--rnd 3", "--cb_dro") for q in ("", " -q ::")),
}
RESUME_CASES = [
    pytest.param(args, marks=_RESUME_BUG) if args in NOT_RESUMABLE else args for args in VW_ARGS
]


def test_resumable_is_false_for_every_command_line_that_does_not_resume() -> None:
    """`resumable` flags each command line whose checkpoint drifts, so recovery replays it."""
    for args in NOT_RESUMABLE:
        assert not resumable(args)
    assert resumable("--cb_explore_adf --squarecb -q ::")
    assert resumable("--cb_explore_adf --epsilon 0.1")


@pytest.mark.parametrize("args", RESUME_CASES)
def test_checkpoint_then_resume_equals_learning_continuously(args: str) -> None:
    """Checkpoint after half the lines, load, feed the rest: equals learning without a break."""
    half = len(LINES) // 2
    checkpoint = _trained(args, LINES[:half]).serialize()
    resumed = VWPolicy.load(args, checkpoint)
    for line in LINES[half:]:
        resumed.learn_one(line)
    continuous = _trained(args, LINES)
    assert _predictions(resumed) == _predictions(continuous)
    # Resumed models must also keep learning identically afterwards.
    for line in LINES[:10]:
        resumed.learn_one(line)
        continuous.learn_one(line)
    assert _predictions(resumed) == _predictions(continuous)


# -- validate_args ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [*VW_ARGS, DEFAULT_VW_ARGS, "--cb_explore_adf --cb_adf"])
def test_validate_args_accepts_exploring_adf_learners(args: str) -> None:
    """Every contract command line (and the default) is accepted and returned unchanged."""
    assert validate_args(args) == args


def test_validate_args_normalises_whitespace_and_quoting() -> None:
    """The accepted command line comes back as a normalised shell token list."""
    assert (
        validate_args("  --cb_explore_adf   --epsilon '0.1'  ") == "--cb_explore_adf --epsilon 0.1"
    )


@pytest.mark.parametrize(
    ("args", "option"),
    [
        ("--cb_explore_adf -d train.dat", "-d"),
        ("--cb_explore_adf --data train.dat", "--data"),
        ("--cb_explore_adf --data=train.dat", "--data"),
        ("--cb_explore_adf -f model.vw", "-f"),
        ("--cb_explore_adf --final_regressor=model.vw", "--final_regressor"),
        ("--cb_explore_adf -i model.vw", "-i"),
        ("--cb_explore_adf -p preds.txt", "-p"),
        ("--cb_explore_adf --readable_model r.txt", "--readable_model"),
        ("--cb_explore_adf --invert_hash=h.txt", "--invert_hash"),
        ("--cb_explore_adf --daemon --port 26542", "--daemon"),
        ("--cb_explore_adf --passes 3", "--passes"),
        ("--cb_explore_adf --dsjson", "--dsjson"),
    ],
)
def test_validate_args_rejects_driver_options_naming_the_field(args: str, option: str) -> None:
    """Options that read or write files or run VW's own driver are rejected before VW sees them."""
    with pytest.raises(InvalidArgument) as info:
        validate_args(args, "experiment.vw_args")
    assert info.value.field == "experiment.vw_args"
    message = str(info.value)
    assert message.startswith(f"experiment.vw_args: {args!r}: option {option!r} controls files")


@pytest.mark.parametrize("option", ["-d", "-i", "-f", "-p"])
def test_validate_args_rejects_short_driver_options_with_attached_values(
    option: str, tmp_path: Path
) -> None:
    """'-d<path>' and friends are rejected just like '-d <path>'."""
    target = tmp_path / "file"
    if option in ("-d", "-i"):  # make them exist, so only the option check could reject them
        target.write_bytes(VWPolicy("--cb_explore_adf").serialize() if option == "-i" else b"")
    with pytest.raises(InvalidArgument, match="controls files"):
        validate_args(f"--cb_explore_adf {option}{target}", "experiment.vw_args")


@pytest.mark.parametrize("args", ["--cb_adf", "--cb_adf -q ::", "--csoaa_ldf multiline", ""])
def test_validate_args_rejects_learners_that_do_not_explore(args: str) -> None:
    """A learner that does not predict action probabilities over ADF actions is rejected."""
    with pytest.raises(InvalidArgument) as info:
        validate_args(args, "experiment.vw_args")
    assert info.value.field == "experiment.vw_args"
    assert "it must include --cb_explore_adf" in str(info.value)


@pytest.mark.parametrize(
    ("args", "vw_text"),
    [
        ("--cb_explore_adf --epsilon banana", "Failed to convert banana"),
        ("--cb_explore_adf --no_such_option", "unrecognised option '--no_such_option'"),
    ],
)
def test_validate_args_reports_vws_own_error(args: str, vw_text: str) -> None:
    """When VW rejects the command line, the message names the field and includes VW's text."""
    with pytest.raises(InvalidArgument) as info:
        validate_args(args, "experiment.vw_args")
    assert info.value.field == "experiment.vw_args"
    assert str(info.value).startswith(f"experiment.vw_args: {args!r} rejected by VW: ")
    assert vw_text in str(info.value)


def test_validate_args_refuses_dropout_whose_reloaded_model_predicts_differently() -> None:
    """--nn with --dropout: a saved and reloaded model predicts differently, even before it
    learns more (found by an audit), so snapshots and exports could not reproduce it."""
    args = "--cb_explore_adf --nn 2 --dropout"
    policy = VWPolicy(args)
    for _, learning in _examples(50, seed=3):
        policy.learn_one(learning)
    restored = VWPolicy.load(args, policy.serialize())
    assert _predictions(restored) != _predictions(policy)  # the reason for the refusal
    with pytest.raises(InvalidArgument) as info:
        validate_args(args, "experiment.vw_args")
    assert str(info.value) == (
        f"experiment.vw_args: {args!r}: option '--dropout' makes a saved and reloaded model "
        "predict differently, so no snapshot, checkpoint or export could reproduce it"
    )


def test_validate_args_rejects_unbalanced_quotes() -> None:
    """A command line that does not split (an open quote) is rejected naming the field."""
    with pytest.raises(InvalidArgument) as info:
        validate_args("--cb_explore_adf --epsilon '0.1", "experiment.vw_args")
    assert info.value.field == "experiment.vw_args"
    assert "is not a command line: No closing quotation" in str(info.value)


@pytest.mark.parametrize(
    ("args", "order", "bound"),
    [
        ("--cb_explore_adf --epsilon 0.2", 1, 1e30),
        ("--cb_explore_adf -q ::", 2, 1e15),
        ("--cb_explore_adf -qUA", 2, 1e15),
        ("--cb_explore_adf --quadratic=UA --quiet", 2, 1e15),
        ("--cb_explore_adf --lrq UA4", 2, 1e15),
        ("--cb_explore_adf --cubic UUA", 3, 1e10),
        ("--cb_explore_adf -q UA --cubic :::", 3, 1e10),
        ("--cb_explore_adf --interactions ABCDE", 5, 1e6),
        ("--cb_explore_adf --interactions=AB", 2, 1e15),
        ("--cb_explore_adf --automl 3", 2, 1e15),
        ("--cb_explore_adf --automl 3 --interaction_type cubic", 3, 1e10),
    ],
)
def test_interacted_values_are_bounded_so_their_products_stay_within_1e30(
    args: str, order: int, bound: float
) -> None:
    """VW multiplies `order` values into one interacted feature, in 32-bit floats."""
    assert interaction_order(args) == order
    assert number_bound(args) == pytest.approx(bound, rel=1e-12)
