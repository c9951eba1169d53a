from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RewardAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWARD_AGGREGATION_UNSPECIFIED: _ClassVar[RewardAggregation]
    REWARD_AGGREGATION_EARLIEST: _ClassVar[RewardAggregation]
    REWARD_AGGREGATION_SUM: _ClassVar[RewardAggregation]
REWARD_AGGREGATION_UNSPECIFIED: RewardAggregation
REWARD_AGGREGATION_EARLIEST: RewardAggregation
REWARD_AGGREGATION_SUM: RewardAggregation

class Feature(_message.Message):
    __slots__ = ("name", "string_value", "number_value", "bool_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    string_value: str
    number_value: float
    bool_value: bool
    def __init__(self, name: _Optional[str] = ..., string_value: _Optional[str] = ..., number_value: _Optional[float] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class Namespace(_message.Message):
    __slots__ = ("name", "features")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    def __init__(self, name: _Optional[str] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("id", "features")
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    id: str
    features: _containers.RepeatedCompositeFieldContainer[Namespace]
    def __init__(self, id: _Optional[str] = ..., features: _Optional[_Iterable[_Union[Namespace, _Mapping]]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("experiment", "event_id", "context", "actions", "excluded_action_ids", "defer_activation", "user_id")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_ACTION_IDS_FIELD_NUMBER: _ClassVar[int]
    DEFER_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    event_id: str
    context: _containers.RepeatedCompositeFieldContainer[Namespace]
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    excluded_action_ids: _containers.RepeatedScalarFieldContainer[str]
    defer_activation: bool
    user_id: str
    def __init__(self, experiment: _Optional[str] = ..., event_id: _Optional[str] = ..., context: _Optional[_Iterable[_Union[Namespace, _Mapping]]] = ..., actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., excluded_action_ids: _Optional[_Iterable[str]] = ..., defer_activation: _Optional[bool] = ..., user_id: _Optional[str] = ...) -> None: ...

class RankedAction(_message.Message):
    __slots__ = ("action_id", "probability")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    probability: float
    def __init__(self, action_id: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("event_id", "chosen_action_id", "ranking", "model_version")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    chosen_action_id: str
    ranking: _containers.RepeatedCompositeFieldContainer[RankedAction]
    model_version: str
    def __init__(self, event_id: _Optional[str] = ..., chosen_action_id: _Optional[str] = ..., ranking: _Optional[_Iterable[_Union[RankedAction, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class RewardRequest(_message.Message):
    __slots__ = ("experiment", "event_id", "value")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    event_id: str
    value: float
    def __init__(self, experiment: _Optional[str] = ..., event_id: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class RewardResponse(_message.Message):
    __slots__ = ("late",)
    LATE_FIELD_NUMBER: _ClassVar[int]
    late: bool
    def __init__(self, late: _Optional[bool] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("experiment", "event_id")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    event_id: str
    def __init__(self, experiment: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class ActivateResponse(_message.Message):
    __slots__ = ("late",)
    LATE_FIELD_NUMBER: _ClassVar[int]
    late: bool
    def __init__(self, late: _Optional[bool] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("name", "vw_args", "reward_wait_seconds", "default_reward", "reward_aggregation", "model_update_interval_seconds", "model_version", "learned_events", "learning_stalled", "unlearnable_events", "stalled_event_id", "stall_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VW_ARGS_FIELD_NUMBER: _ClassVar[int]
    REWARD_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REWARD_FIELD_NUMBER: _ClassVar[int]
    REWARD_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_UPDATE_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEARNED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_STALLED_FIELD_NUMBER: _ClassVar[int]
    UNLEARNABLE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    STALLED_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STALL_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    vw_args: str
    reward_wait_seconds: float
    default_reward: float
    reward_aggregation: RewardAggregation
    model_update_interval_seconds: float
    model_version: str
    learned_events: int
    learning_stalled: bool
    unlearnable_events: int
    stalled_event_id: str
    stall_reason: str
    def __init__(self, name: _Optional[str] = ..., vw_args: _Optional[str] = ..., reward_wait_seconds: _Optional[float] = ..., default_reward: _Optional[float] = ..., reward_aggregation: _Optional[_Union[RewardAggregation, str]] = ..., model_update_interval_seconds: _Optional[float] = ..., model_version: _Optional[str] = ..., learned_events: _Optional[int] = ..., learning_stalled: _Optional[bool] = ..., unlearnable_events: _Optional[int] = ..., stalled_event_id: _Optional[str] = ..., stall_reason: _Optional[str] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ...) -> None: ...

class UpdateExperimentRequest(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class DeleteExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteExperimentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RebuildModelRequest(_message.Message):
    __slots__ = ("name", "skip_event_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SKIP_EVENT_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    skip_event_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., skip_event_ids: _Optional[_Iterable[str]] = ...) -> None: ...
