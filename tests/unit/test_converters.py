"""Protobuf <-> core conversions and the error-to-status table, without a server."""

from __future__ import annotations

from typing import cast

import grpc
import pytest

from bandit_server import errors
from bandit_server.core import types
from bandit_server.core.dsjson import context_json
from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.core.types import (
    Action,
    Feature,
    Namespace,
    RankResult,
    action_facts,
    approximate_bytes,
)
from bandit_server.engine.engine import ExperimentStatus
from bandit_server.errors import InvalidArgument
from bandit_server.learners.vw import DEFAULT_VW_ARGS
from bandit_server.rpc import converters
from bandit_server.rpc.errors import status_for
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.storage.records import DuplicateDecision


def test_feature_values_of_each_oneof_kind_convert_to_python_values() -> None:
    """string_value, number_value and bool_value become str, float and bool, defaults included."""
    cases = [
        (pb.Feature(name="f", string_value="x"), "x"),
        (pb.Feature(name="f", string_value=""), ""),
        (pb.Feature(name="f", number_value=2.5), 2.5),
        (pb.Feature(name="f", number_value=0.0), 0.0),
        (pb.Feature(name="f", bool_value=True), True),
        (pb.Feature(name="f", bool_value=False), False),
    ]
    for message, expected in cases:
        value = converters.feature_value(message, "x")
        assert value == expected and type(value) is type(expected), message


def test_a_feature_without_a_value_is_invalid_naming_its_path() -> None:
    """A feature with no oneof member set is InvalidArgument naming `...features[j].value`."""
    request = pb.RankRequest(
        experiment="exp",
        context=[
            pb.Namespace(
                name="User",
                features=[pb.Feature(name="ok", number_value=1), pb.Feature(name="missing")],
            )
        ],
        actions=[pb.Action(id="a")],
    )
    with pytest.raises(InvalidArgument) as info:
        converters.rank_input(request)
    assert info.value.field == "context[0].features[1].value"
    assert str(info.value) == "context[0].features[1].value: feature 'missing' has no value set"


def test_a_valueless_action_feature_names_the_action_path() -> None:
    """Inside actions the path is `actions[i].features[k].features[j].value`."""
    request = pb.RankRequest(
        experiment="exp",
        actions=[
            pb.Action(id="a"),
            pb.Action(
                id="b",
                features=[
                    pb.Namespace(name="A", features=[pb.Feature(name="x", bool_value=True)]),
                    pb.Namespace(name="B", features=[pb.Feature(name="y")]),
                ],
            ),
        ],
    )
    with pytest.raises(InvalidArgument) as info:
        converters.rank_input(request)
    assert info.value.field == "actions[1].features[1].features[0].value"


def test_rank_input_carries_every_request_field() -> None:
    """A RankRequest becomes a RankInput with the same ids, features, exclusions and flags."""
    request = pb.RankRequest(
        experiment="exp",
        event_id="ev-1",
        context=[pb.Namespace(name="User", features=[pb.Feature(name="s", string_value="x")])],
        actions=[
            pb.Action(
                id="a0",
                features=[pb.Namespace(name="A", features=[pb.Feature(name="n", number_value=1)])],
            ),
            pb.Action(id="a1"),
        ],
        excluded_action_ids=["a1"],
        defer_activation=True,
        user_id="u-9",
    )
    rank = converters.rank_input(request)
    assert rank.experiment == "exp" and rank.event_id == "ev-1" and rank.user_id == "u-9"
    assert rank.context == (Namespace("User", (Feature("s", "x"),)),)
    assert rank.actions == (
        Action("a0", (Namespace("A", (Feature("n", 1.0),)),)),
        Action("a1", ()),
    )
    assert rank.excluded_action_ids == ("a1",)
    assert rank.defer_activation is True


def test_rank_input_propagates_core_validation_errors() -> None:
    """Core validation runs on conversion: a repeated action id is InvalidArgument."""
    request = pb.RankRequest(experiment="exp", actions=[pb.Action(id="a"), pb.Action(id="a")])
    with pytest.raises(InvalidArgument, match=r"^actions\[1\]\.id: 'a' repeats actions\[0\]\.id$"):
        converters.rank_input(request)


def test_rank_response_puts_the_chosen_action_first() -> None:
    """The response's chosen_action_id is the ranking's first entry; order and numbers kept."""
    result = RankResult("ev", (("b", 0.75), ("a", 0.25)), "v7")
    response = converters.rank_response(result)
    assert response.event_id == "ev" and response.model_version == "v7"
    assert response.chosen_action_id == "b"
    assert [(r.action_id, r.probability) for r in response.ranking] == [("b", 0.75), ("a", 0.25)]


def test_experiment_zero_values_mean_the_documented_defaults() -> None:
    """Empty vw_args -> DEFAULT_VW_ARGS, reward_wait 0 -> 600 s, UNSPECIFIED -> EARLIEST."""
    config = converters.experiment_config(pb.Experiment(name="exp"))
    assert config == ExperimentConfig(
        name="exp",
        vw_args=DEFAULT_VW_ARGS,
        reward_wait_seconds=600.0,
        default_reward=0.0,
        aggregation=Aggregation.EARLIEST,
        model_update_interval_seconds=0.0,
    )
    assert converters.experiment_config(pb.Experiment(name="e", vw_args="  ")).vw_args == (
        DEFAULT_VW_ARGS
    )


def test_experiment_explicit_values_are_kept() -> None:
    """Set fields pass through: SUM, waits, default reward, interval and stripped vw_args."""
    config = converters.experiment_config(
        pb.Experiment(
            name="exp",
            vw_args=" --cb_explore_adf --squarecb ",
            reward_wait_seconds=30,
            default_reward=-1,
            reward_aggregation=pb.REWARD_AGGREGATION_SUM,
            model_update_interval_seconds=5,
        )
    )
    assert (config.vw_args, config.reward_wait_seconds, config.default_reward) == (
        "--cb_explore_adf --squarecb",
        30.0,
        -1.0,
    )
    assert config.aggregation is Aggregation.SUM
    assert config.model_update_interval_seconds == 5.0


@pytest.mark.parametrize(
    ("message", "field"),
    [
        # An open proto3 enum carries numbers this server does not know (a newer client's).
        (
            pb.Experiment(name="exp", reward_aggregation=cast(pb.RewardAggregation, 7)),
            "experiment.reward_aggregation",
        ),
        (pb.Experiment(name="9x"), "experiment.name"),
        (pb.Experiment(name="exp", reward_wait_seconds=-5), "experiment.reward_wait_seconds"),
        (pb.Experiment(name="exp", default_reward=float("nan")), "experiment.default_reward"),
    ],
)
def test_bad_experiment_messages_are_invalid_naming_the_field(
    message: pb.Experiment, field: str
) -> None:
    """An unknown aggregation number or an invalid setting is InvalidArgument naming it."""
    with pytest.raises(InvalidArgument) as info:
        converters.experiment_config(message)
    assert info.value.field == field


@pytest.mark.parametrize("aggregation", list(Aggregation))
def test_experiment_message_round_trips(aggregation: Aggregation) -> None:
    """experiment_config(experiment_message(status)) gives back the config; outputs are set."""
    config = ExperimentConfig(
        name="exp",
        vw_args="--cb_explore_adf --epsilon 0.1",
        reward_wait_seconds=12.5,
        default_reward=-0.5,
        aggregation=aggregation,
        model_update_interval_seconds=2.0,
    )
    message = converters.experiment_message(ExperimentStatus(config, "epoch-3", 42))
    assert message.model_version == "epoch-3" and message.learned_events == 42
    assert not message.learning_stalled
    assert message.stalled_event_id == message.stall_reason == ""
    stalled = ExperimentStatus(config, "epoch-3", 42, True, 2, "ev-9", "VW could not learn it")
    stalled_message = converters.experiment_message(stalled)
    assert stalled_message.learning_stalled and stalled_message.unlearnable_events == 2
    assert stalled_message.stalled_event_id == "ev-9"
    assert stalled_message.stall_reason == "VW could not learn it"
    assert converters.experiment_config(message) == config


# -- rpc/errors.py ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("f", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("nope"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("taken"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.Unavailable("busy"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_domain_error_maps_to_its_status(error: Exception, code: grpc.StatusCode) -> None:
    """Every domain error has exactly one status code."""
    assert status_for(error) is code


@pytest.mark.parametrize(
    "error",
    [
        ValueError("plain"),
        LookupError("plain"),
        KeyError("k"),
        RuntimeError("boom"),
        errors.BanditError("base"),
        DuplicateDecision("dup"),
    ],
)
def test_unmapped_exceptions_map_to_none(error: Exception) -> None:
    """Unmapped exceptions, even plain ValueError/LookupError, map to None (INTERNAL)."""
    assert status_for(error) is None


def _action_message(action_id: str, **value: object) -> pb.Action:
    return pb.Action(
        id=action_id,
        features=[pb.Namespace(name="A", features=[pb.Feature(name="x", **value)])],  # type: ignore[arg-type]
    )


def test_the_same_action_bytes_give_the_same_action_object() -> None:
    """Actions repeat across Ranks; one converted object per wire form lets the memos hit."""
    a, b = _action_message("a", string_value="v"), _action_message("b", number_value=2.0)
    first = converters.rank_input(pb.RankRequest(experiment="exp", actions=[a, b]))
    again = converters.rank_input(
        pb.RankRequest.FromString(
            pb.RankRequest(experiment="exp", actions=[b, a]).SerializeToString()
        )
    )
    assert again.actions[1] is first.actions[0] and again.actions[0] is first.actions[1]
    other = converters.rank_input(
        pb.RankRequest(experiment="exp", actions=[_action_message("a", string_value="w")])
    )
    assert other.actions[0] == Action("a", (Namespace("A", (Feature("x", "w"),)),))


def test_bool_and_number_actions_that_compare_equal_keep_their_own_json() -> None:
    """True == 1.0 in Python; VW must still see `true` for one and `1.0` for the other."""
    as_bool = converters.rank_input(
        pb.RankRequest(experiment="exp", actions=[_action_message("a", bool_value=True)])
    )
    as_number = converters.rank_input(
        pb.RankRequest(experiment="exp", actions=[_action_message("a", number_value=1.0)])
    )
    assert as_bool.actions == as_number.actions  # equal tuples, different wire forms
    for _ in range(2):  # the second round is served from the memos
        assert context_json((), as_bool.actions) == '{"_multi":[{"A":{"x":true}}]}'
        assert context_json((), as_number.actions) == '{"_multi":[{"A":{"x":1.0}}]}'


def test_an_invalid_action_is_named_at_its_position_in_every_request() -> None:
    """Failures are never cached: the same bad action is reported where it is each time."""
    bad_conversion = pb.Action(id="bad", features=[pb.Namespace(name="A", features=[
        pb.Feature(name="x")])])  # fmt: skip
    bad_number = _action_message("nan", number_value=float("nan"))
    for position in (1, 2, 0):
        for bad, field in (
            (bad_conversion, f"actions[{position}].features[0].features[0].value"),
            (bad_number, f"actions[{position}].features[0].features[0].number_value"),
        ):
            actions = [_action_message(f"ok{k}", string_value="v") for k in range(2)]
            actions.insert(position, bad)
            with pytest.raises(InvalidArgument) as info:
                converters.rank_input(pb.RankRequest(experiment="exp", actions=actions))
            assert info.value.field == field


def _many_false_features(action_id: str, n: int) -> pb.Action:
    features = [pb.Feature(name=f"f{k}", bool_value=False) for k in range(n)]
    return pb.Action(id=action_id, features=[pb.Namespace(name="A", features=features)])


def test_an_action_too_large_to_keep_is_converted_per_request() -> None:
    """False features vanish from the DSJSON but not from memory: they count toward the size,
    so an action of thousands of them is neither cached nor memoized, and still served right."""
    message = _many_false_features("big", 5000)
    first = converters.rank_input(pb.RankRequest(experiment="exp", actions=[message]))
    again = converters.rank_input(pb.RankRequest(experiment="exp", actions=[message]))
    assert first.actions == again.actions and first.actions[0] is not again.actions[0]
    assert action_facts(first.actions[0]) is not action_facts(first.actions[0])
    assert context_json((), first.actions) == '{"_multi":[{"A":{}}]}'


def test_the_caches_stay_within_their_bounds_under_ever_new_actions() -> None:
    """A client sending a new, fairly large action with every Rank cannot grow what is kept."""
    for k in range(1200):  # about 18 MiB of actions: both caches must start over
        rank = converters.rank_input(
            pb.RankRequest(experiment="exp", actions=[_many_false_features(f"a{k}", 100)])
        )
        context_json((), rank.actions)
    kept = [action for action in converters._actions._entries.values()]
    assert sum(approximate_bytes(a) for a in kept) <= 16 << 20 and len(kept) <= 4096
    facts = [key for key, _ in types._facts._entries._entries.values()]
    assert len(facts) <= 4096
    assert sum(approximate_bytes(a) for a in facts) <= 16 << 20  # type: ignore[arg-type]


def test_actions_of_an_invalid_request_are_not_kept() -> None:
    """Only actions of requests that passed validation enter the cache."""
    before = len(converters._actions)
    for k in range(50):
        bad = pb.RankRequest(experiment="exp", event_id="x" * 300, actions=[
            _action_message(f"never-kept-{k}", string_value="v")])  # fmt: skip
        with pytest.raises(InvalidArgument):
            converters.rank_input(bad)
    assert len(converters._actions) <= before
