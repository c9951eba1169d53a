"""Pure conversions between protobuf messages and core values. No server needed to test them."""

from __future__ import annotations

from collections.abc import Iterable

from bandit_server.core.experiment import (
    DEFAULT_REWARD_WAIT_SECONDS,
    Aggregation,
    ExperimentConfig,
)
from bandit_server.core.memo import BoundedDict
from bandit_server.core.types import (
    Action,
    Feature,
    FeatureValue,
    Namespace,
    RankInput,
    RankResult,
    approximate_bytes,
)
from bandit_server.engine.engine import ExperimentStatus
from bandit_server.errors import InvalidArgument
from bandit_server.learners.vw import DEFAULT_VW_ARGS
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb

# Converting an action costs several times more than serializing it back, and frontends send the
# same actions with every Rank: one Action object per distinct wire form, which also lets the
# facts kept per Action object (core.types.action_facts) be found again.
_actions: BoundedDict[bytes, Action] = BoundedDict(
    limit=4096, max_size=16 << 20, max_entry_size=16 << 10
)

_AGGREGATION_TO_PB = {
    Aggregation.EARLIEST: pb.REWARD_AGGREGATION_EARLIEST,
    Aggregation.SUM: pb.REWARD_AGGREGATION_SUM,
}
_AGGREGATION_FROM_PB = {
    pb.REWARD_AGGREGATION_UNSPECIFIED: Aggregation.EARLIEST,
    pb.REWARD_AGGREGATION_EARLIEST: Aggregation.EARLIEST,
    pb.REWARD_AGGREGATION_SUM: Aggregation.SUM,
}


def feature_value(message: pb.Feature, field: str) -> FeatureValue:
    kind = message.WhichOneof("value")
    if kind == "string_value":
        return message.string_value
    if kind == "number_value":
        return message.number_value
    if kind == "bool_value":
        return message.bool_value
    raise InvalidArgument(f"{field}.value", f"feature {message.name!r} has no value set")


def namespaces(messages: Iterable[pb.Namespace], field: str) -> tuple[Namespace, ...]:
    # Flat loops, not nested generators: this runs for every namespace of every Rank.
    out = []
    for i, ns in enumerate(messages):
        features = []
        for f in ns.features:
            kind = f.WhichOneof("value")
            if kind == "string_value":
                features.append(Feature(f.name, f.string_value))
            elif kind == "number_value":
                features.append(Feature(f.name, f.number_value))
            elif kind == "bool_value":
                features.append(Feature(f.name, f.bool_value))
            else:
                j = list(ns.features).index(f)
                feature_value(f, f"{field}[{i}].features[{j}]")  # raises, naming the field
        out.append(Namespace(ns.name, tuple(features)))
    return tuple(out)


def rank_input(request: pb.RankRequest) -> RankInput:
    """Validated core input; raises InvalidArgument naming the field."""
    context = namespaces(request.context, "context")
    actions = []
    fresh = []
    for i, message in enumerate(request.actions):
        key = message.SerializeToString()
        action = _actions.get(key)
        if action is None:
            action = Action(message.id, namespaces(message.features, f"actions[{i}].features"))
            fresh.append((key, action))
        actions.append(action)
    result = RankInput(
        experiment=request.experiment,
        event_id=request.event_id,
        context=context,
        actions=tuple(actions),
        excluded_action_ids=tuple(request.excluded_action_ids),
        defer_activation=request.defer_activation,
        user_id=request.user_id,
    )
    for key, action in fresh:  # kept only once RankInput has found them valid
        _actions.put(key, action, len(key) + approximate_bytes(action))
    return result


def namespace_messages(namespaces: Iterable[Namespace]) -> list[pb.Namespace]:
    """Core namespaces as protobuf, for clients (scripts, tests, benchmarks)."""
    out = []
    for ns in namespaces:
        features = []
        for f in ns.features:
            if isinstance(f.value, bool):  # before numbers: bool is an int subclass
                features.append(pb.Feature(name=f.name, bool_value=f.value))
            elif isinstance(f.value, str):
                features.append(pb.Feature(name=f.name, string_value=f.value))
            else:
                features.append(pb.Feature(name=f.name, number_value=float(f.value)))
        out.append(pb.Namespace(name=ns.name, features=features))
    return out


def action_messages(actions: Iterable[Action]) -> list[pb.Action]:
    return [pb.Action(id=a.id, features=namespace_messages(a.features)) for a in actions]


def rank_response(result: RankResult) -> pb.RankResponse:
    response = pb.RankResponse(
        event_id=result.event_id,
        chosen_action_id=result.chosen_action_id,
        model_version=result.model_version,
    )
    add = response.ranking.add  # half the cost of building RankedAction messages to copy in
    for action_id, probability in result.ranking:
        add(action_id=action_id, probability=probability)
    return response


def experiment_config(message: pb.Experiment) -> ExperimentConfig:
    """Settings from the wire; zero values mean the documented defaults."""
    aggregation = _AGGREGATION_FROM_PB.get(message.reward_aggregation)
    if aggregation is None:
        raise InvalidArgument(
            "experiment.reward_aggregation", f"{message.reward_aggregation!r} is not a known value"
        )
    return ExperimentConfig(
        name=message.name,
        vw_args=message.vw_args.strip() or DEFAULT_VW_ARGS,
        reward_wait_seconds=message.reward_wait_seconds or DEFAULT_REWARD_WAIT_SECONDS,
        default_reward=message.default_reward,
        aggregation=aggregation,
        model_update_interval_seconds=message.model_update_interval_seconds,
    )


def experiment_message(status: ExperimentStatus) -> pb.Experiment:
    config = status.config
    return pb.Experiment(
        name=config.name,
        vw_args=config.vw_args,
        reward_wait_seconds=config.reward_wait_seconds,
        default_reward=config.default_reward,
        reward_aggregation=_AGGREGATION_TO_PB[config.aggregation],
        model_update_interval_seconds=config.model_update_interval_seconds,
        model_version=status.model_version,
        learned_events=status.learned_events,
        learning_stalled=status.learning_stalled,
        unlearnable_events=status.unlearnable_events,
        stalled_event_id=status.stalled_event_id,
        stall_reason=status.stall_reason,
    )
