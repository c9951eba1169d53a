"""Validation of rank requests and experiment settings: every error names its field exactly."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.core.types import (
    Action,
    Feature,
    Namespace,
    RankInput,
    _raise_first_problem,
    check_namespaces,
)
from bandit_server.errors import InvalidArgument

# Hypothesis' per-example deadline is a timing check; these are pure CPU work, so none.
UNTIMED = settings(deadline=None)
OK_NS = Namespace("User", (Feature("segment", "s1"), Feature("age", 3.0)))


def _action(action_id: str, *namespaces: Namespace) -> Action:
    return Action(action_id, namespaces or (Namespace("Action", (Feature("v", action_id),)),))


ACTIONS = (_action("a0"), _action("a1"), _action("a2"))


def _rank(**changes: object) -> RankInput:
    fields: dict[str, object] = {
        "experiment": "exp",
        "event_id": "ev",
        "context": (OK_NS,),
        "actions": ACTIONS,
    }
    fields.update(changes)
    return RankInput(**fields)  # type: ignore[arg-type]


BAD_RANKS: list[tuple[dict[str, object], str, str]] = [
    ({"actions": ()}, "actions", "no actions given; at least one is needed"),
    ({"context": (Namespace("", ()),)}, "context[0].name", "namespace name is empty"),
    (
        {"context": (OK_NS, Namespace("_x", ()))},
        "context[1].name",
        "namespace name '_x' starts with '_', reserved by VW",
    ),
    ({"context": (OK_NS, OK_NS)}, "context[1].name", "namespace 'User' repeats context[0].name"),
    (
        {"context": (Namespace("U", (Feature("f", 1.0), Feature("", 2.0))),)},
        "context[0].features[1].name",
        "feature name is empty",
    ),
    (
        {"context": (Namespace("U", (Feature("f", 1.0), Feature("g", 1.0), Feature("f", 2.0))),)},
        "context[0].features[2].name",
        "feature 'f' repeats context[0].features[0].name",
    ),
    (
        {"context": (Namespace("U", (Feature("f", float("nan")),)),)},
        "context[0].features[0].number_value",
        "nan is not a finite number",
    ),
    (
        {
            "actions": (
                ACTIONS[0],
                _action(
                    "a1",
                    Namespace("Action", (Feature("x", 1.0), Feature("y", 1.0), Feature("_z", 1.0))),
                ),
            )
        },
        "actions[1].features[0].features[2].name",
        "feature name '_z' starts with '_', reserved by VW",
    ),
    (
        {"actions": (ACTIONS[0], _action("a1", OK_NS, Namespace("Act", (Feature("v", -1e309),))))},
        "actions[1].features[1].features[0].number_value",
        "-inf is not a finite number",
    ),
    (
        {"context": (Namespace("User", (Feature("big", 1.5e30),)),)},
        "context[0].features[0].number_value",
        "1.5e+30 is larger in magnitude than 1e+30, the most VW can learn from safely",
    ),
    (
        {"actions": (ACTIONS[0], _action("a1", Namespace("A", (Feature("v", -1e39),))))},
        "actions[1].features[0].features[0].number_value",
        "-1e+39 is larger in magnitude than 1e+30, the most VW can learn from safely",
    ),
    (
        {"actions": (ACTIONS[0], _action("a1", OK_NS, OK_NS))},
        "actions[1].features[1].name",
        "namespace 'User' repeats actions[1].features[0].name",
    ),
    ({"actions": (ACTIONS[0], _action(""))}, "actions[1].id", "action id is empty"),
    (
        {"actions": (ACTIONS[0], ACTIONS[1], _action("a0"))},
        "actions[2].id",
        "'a0' repeats actions[0].id",
    ),
    (
        {"actions": (ACTIONS[0], _action("x" * 257))},
        "actions[1].id",
        f"action id '{'x' * 76}... is longer than 256 characters",
    ),
    (
        {"event_id": "e" * 257},
        "event_id",
        f"event_id '{'e' * 76}... is longer than 256 characters",
    ),
    ({"user_id": "u" * 257}, "user_id", f"'{'u' * 76}... is longer than 256 characters"),
    (
        {"excluded_action_ids": ("a1", "zz")},
        "excluded_action_ids[1]",
        "'zz' is not among the actions",
    ),
    (
        {"excluded_action_ids": ("a1", "a2", "a1")},
        "excluded_action_ids[2]",
        "'a1' repeats excluded_action_ids[0]",
    ),
    (
        {"excluded_action_ids": ("a2", "a0", "a1")},
        "excluded_action_ids",
        "all 3 actions are excluded; at least one must remain",
    ),
]


@pytest.mark.parametrize(
    ("changes", "field", "message"), BAD_RANKS, ids=[case[1] for case in BAD_RANKS]
)
def test_rank_input_errors_name_the_field_path_exactly(
    changes: dict[str, object], field: str, message: str
) -> None:
    """Each invalid request raises InvalidArgument whose text is exactly 'path: message'."""
    with pytest.raises(InvalidArgument) as info:
        _rank(**changes)
    assert info.value.field == field
    assert str(info.value) == f"{field}: {message}"


def test_ids_of_exactly_256_characters_and_an_empty_event_id_are_accepted() -> None:
    """256 characters is the limit, inclusive; an empty event_id means 'assign one'."""
    _rank(event_id="e" * 256, user_id="u" * 256, actions=(_action("a" * 256),))
    assert _rank(event_id="").event_id == ""


def test_feature_values_of_every_kind_are_accepted() -> None:
    """Strings (even empty), numbers up to 1e30 in magnitude and both booleans are valid."""
    ns = Namespace(
        "N",
        (
            Feature("s", ""),
            Feature("n", -1e30),
            Feature("p", 1e30),
            Feature("tiny", 5e-324),
            Feature("t", True),
            Feature("f", False),
        ),
    )
    _rank(context=(ns,))


def test_candidates_keep_request_order_without_the_excluded() -> None:
    """candidates() lists the remaining actions in request order, whatever the exclusion order."""
    actions = tuple(_action(f"a{i}") for i in range(5))
    request = _rank(actions=actions, excluded_action_ids=("a3", "a0"))
    assert [a.id for a in request.candidates()] == ["a1", "a2", "a4"]
    assert _rank(actions=actions).candidates() == actions


@UNTIMED
@given(st.lists(st.booleans(), min_size=1, max_size=12).filter(lambda bits: not all(bits)))
def test_candidates_are_the_actions_minus_the_excluded(bits: list[bool]) -> None:
    """For any exclusion set leaving one action, candidates() = actions minus excluded, in order."""
    actions = tuple(_action(f"a{i}") for i in range(len(bits)))
    excluded = tuple(a.id for a, out in zip(actions, bits, strict=True) if out)[::-1]
    request = _rank(actions=actions, excluded_action_ids=excluded)
    assert request.candidates() == tuple(a for a, out in zip(actions, bits, strict=True) if not out)


# -- ExperimentConfig ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "Exp_1-b", "x" * 64])
def test_experiment_accepts_safe_names(name: str) -> None:
    """Names are a letter then up to 63 letters, digits, '_' or '-'."""
    assert ExperimentConfig(name, "--cb_explore_adf").name == name


@pytest.mark.parametrize(
    "name", ["", "9lives", "_x", "-x", "a b", "a.b", "a/b", "é", "x" * 65, "abc\n"]
)
def test_experiment_rejects_unsafe_names(name: str) -> None:
    """Any other name is rejected, naming experiment.name and quoting the value."""
    with pytest.raises(InvalidArgument) as info:
        ExperimentConfig(name, "--cb_explore_adf")
    assert info.value.field == "experiment.name"
    assert str(info.value).startswith(f"experiment.name: {name!r} is not a safe identifier")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reward_wait_seconds", 0.0),
        ("reward_wait_seconds", -1.0),
        ("reward_wait_seconds", 30 * 24 * 3600.0 + 1),
        ("reward_wait_seconds", float("nan")),
        ("reward_wait_seconds", float("inf")),
        ("default_reward", float("nan")),
        ("default_reward", float("-inf")),
        ("default_reward", 2e15),
        ("default_reward", -1e39),
        ("model_update_interval_seconds", -0.5),
        ("model_update_interval_seconds", float("inf")),
        ("model_update_interval_seconds", float("nan")),
    ],
)
def test_experiment_rejects_bad_numbers_naming_the_field(field: str, value: float) -> None:
    """Non-finite numbers, waits outside (0, 30 days] and negative intervals are rejected."""
    with pytest.raises(InvalidArgument) as info:
        ExperimentConfig("exp", "--cb_explore_adf", **{field: value})  # type: ignore[arg-type]
    assert info.value.field == f"experiment.{field}"
    assert repr(value) in str(info.value)


def test_experiment_accepts_the_boundary_values() -> None:
    """A 30-day wait, a tiny positive wait and a zero update interval are all valid."""
    ExperimentConfig("exp", "x", reward_wait_seconds=30 * 24 * 3600.0)
    ExperimentConfig("exp", "x", reward_wait_seconds=1e-3, model_update_interval_seconds=0.0)


@pytest.mark.parametrize("aggregation", list(Aggregation))
def test_experiment_json_round_trip(aggregation: Aggregation) -> None:
    """to_json_dict -> JSON text -> from_json_dict gives back an equal config."""
    config = ExperimentConfig(
        name="exp-1",
        vw_args="--cb_explore_adf --epsilon 0.1 -q UA",
        reward_wait_seconds=12.5,
        default_reward=-0.25,
        aggregation=aggregation,
        model_update_interval_seconds=3.0,
    )
    data = json.loads(json.dumps(config.to_json_dict()))
    assert data["aggregation"] == aggregation.value
    assert ExperimentConfig.from_json_dict(data) == config


def test_experiment_config_is_frozen() -> None:
    """Settings cannot be changed after validation."""
    config = ExperimentConfig("exp", "--cb_explore_adf")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.reward_wait_seconds = -1  # type: ignore[misc]


_NAME = st.sampled_from(
    ["", "a", "b", "_x", " a", "\u00e9t\u00e9", "~", "!", "Z", "\x7fa", "\x1f", "\ta"]
)
_NUMBER = st.sampled_from([0.0, -1.5, 1e30, -1e30, 1.5e30, float("nan"), float("inf")])
_FEATURES = st.lists(
    st.builds(Feature, _NAME, st.one_of(_NUMBER, st.booleans(), st.text(max_size=2))),
    max_size=3,
)
_NAMESPACES = st.lists(st.builds(Namespace, _NAME, _FEATURES.map(tuple)), max_size=3).map(tuple)


@UNTIMED
@given(namespaces=_NAMESPACES)
def test_the_fast_namespace_check_agrees_with_the_detailed_one(
    namespaces: tuple[Namespace, ...],
) -> None:
    """check_namespaces only tests on its happy path and hands problems to the detailed walk:
    both must reject exactly the same inputs, with the same first error."""
    try:
        _raise_first_problem("context", namespaces)
    except InvalidArgument as expected:
        with pytest.raises(InvalidArgument) as info:
            check_namespaces("context", namespaces)
        assert str(info.value) == str(expected)
    except AssertionError:  # the detailed walk found nothing wrong
        check_namespaces("context", namespaces)


def test_a_stored_default_reward_past_the_limit_still_loads_within_it() -> None:
    """Settings stored before the ±1e15 limit must not stop the server from starting."""
    stored = ExperimentConfig("exp", "--cb_explore_adf").to_json_dict()
    for value, loaded in ((1e31, 1e15), (-1e300, -1e15), (0.5, 0.5)):
        stored["default_reward"] = value
        assert ExperimentConfig.from_json_dict(stored).default_reward == loaded
