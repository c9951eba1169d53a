"""Domain values for ranking: features, namespaces, actions, and a validated rank request."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bandit_server.core.memo import IdentityMemo
from bandit_server.errors import InvalidArgument, describe

FeatureValue = str | float | bool

MAX_ID_LENGTH = 256
# VW keeps feature values and costs as 32-bit floats (largest 3.4e38). Magnitudes near or past
# that become infinite inside VW: probabilities turn NaN (--squarecb, --softmax) and --synthcover
# never returns. 1e30 learned fine in every reduction we tried and leaves room for VW's arithmetic.
MAX_NUMBER = 1e30
# Rewards (so costs) tighter still: --regcb's confidence bounds broke from ~1e19 (a review found
# Rank answering INTERNAL after a few rewards of 1e19); 1e15 leaves room and covers real rewards.
MAX_REWARD = 1e15


# Named tuples, not dataclasses: Rank builds several per request and they are 3x cheaper to make.
class Feature(NamedTuple):
    name: str
    value: FeatureValue


class Namespace(NamedTuple):
    name: str
    features: tuple[Feature, ...]


class Action(NamedTuple):
    id: str
    features: tuple[Namespace, ...]


def _check_name(field: str, name: str, what: str) -> None:
    if not name:
        raise InvalidArgument(field, f"{what} name is empty")
    first = name[0]
    if first == "_":
        # VW's JSON reader treats keys that start with '_' as its own (labels, _multi, _text).
        raise InvalidArgument(
            field, f"{what} name {describe(name)} starts with '_', reserved by VW"
        )
    if what == "namespace" and not "!" <= first <= "~":  # printable ASCII, not a space
        # VW indexes a namespace by its first byte; a non-ASCII first character crashes it.
        raise InvalidArgument(
            field,
            f"namespace name {describe(name)} must start with a printable ASCII character "
            "(VW identifies namespaces by their first byte)",
        )


def check_namespaces(field: str, namespaces: Sequence[Namespace]) -> None:
    """Raise InvalidArgument naming the first bad namespace or feature under `field`."""
    # Runs for every namespace of every Rank: the loop only tests; field paths and messages
    # are built by _raise_first_problem once something is wrong.
    seen_namespaces: dict[str, int] = {}
    for i, namespace in enumerate(namespaces):
        name = namespace.name
        if not name or not "!" <= name[0] <= "~" or name[0] == "_" or name in seen_namespaces:
            _raise_first_problem(field, namespaces)
        seen_namespaces[name] = i
        seen_features: set[str] = set()
        for feature in namespace.features:
            fname = feature.name
            value = feature.value
            if (
                not fname
                or fname[0] == "_"
                or fname in seen_features
                or (isinstance(value, float) and not -MAX_NUMBER <= value <= MAX_NUMBER)
            ):
                _raise_first_problem(field, namespaces)
            seen_features.add(fname)


def _raise_first_problem(field: str, namespaces: Sequence[Namespace]) -> None:
    seen_namespaces: dict[str, int] = {}
    for i, namespace in enumerate(namespaces):
        path = f"{field}[{i}]"
        _check_name(f"{path}.name", namespace.name, "namespace")
        first = seen_namespaces.setdefault(namespace.name, i)
        if first != i:
            raise InvalidArgument(
                f"{path}.name",
                f"namespace {describe(namespace.name)} repeats {field}[{first}].name",
            )
        seen_features: dict[str, int] = {}
        for j, feature in enumerate(namespace.features):
            fpath = f"{path}.features[{j}]"
            _check_name(f"{fpath}.name", feature.name, "feature")
            ffirst = seen_features.setdefault(feature.name, j)
            if ffirst != j:
                raise InvalidArgument(
                    f"{fpath}.name",
                    f"feature {describe(feature.name)} repeats {path}.features[{ffirst}].name",
                )
            value = feature.value
            if isinstance(value, float):
                check_number(f"{fpath}.number_value", value)
    raise AssertionError(f"no problem found in {field}")  # the fast check saw one: a bug


def approximate_bytes(action: Action) -> int:
    """About the memory an Action holds in CPython (tuples, strings, floats): what keeping it in
    a cache costs. Every feature counts, false ones too, though the DSJSON leaves them out."""
    size = 100 + len(action.id)
    for namespace in action.features:
        size += 100 + len(namespace.name)
        for feature in namespace.features:
            value = feature.value
            size += 150 + len(feature.name) + (len(value) if isinstance(value, str) else 0)
    return size


class ActionFacts:
    """What has been worked out about one Action object: that its features are valid, and its
    DSJSON `_multi` entry (core.dsjson). Held in one memo so one bound covers both."""

    __slots__ = ("checked", "json", "largest")

    def __init__(self) -> None:
        self.checked = False
        self.json: str | None = None
        self.largest: float | None = None  # largest number magnitude among its features


# Rank sees the same Action objects again: the converter hands out one per distinct wire form.
_facts: IdentityMemo[ActionFacts] = IdentityMemo(
    limit=4096, max_size=16 << 20, max_entry_size=16 << 10
)


def action_facts(action: Action) -> ActionFacts:
    """The facts kept for this very object (see core.memo); fresh ones if it is not kept."""
    facts = _facts.get(action)
    if facts is None:
        facts = ActionFacts()
        _facts.put(action, facts, approximate_bytes(action))
    return facts


def largest_number(namespaces: Sequence[Namespace]) -> float:
    """The largest magnitude among the number features (0.0 if there are none)."""
    largest = 0.0
    for namespace in namespaces:
        for feature in namespace.features:
            value = feature.value
            if isinstance(value, float) and abs(value) > largest:
                largest = abs(value)
    return largest


def check_interacted_numbers(request: RankInput, bound: float, order: int) -> None:
    """Raise InvalidArgument for the first number the model would see past `bound`: with
    interactions of `order` namespaces VW multiplies that many values into one feature."""
    excluded = set(request.excluded_action_ids)
    places: list[tuple[str, Sequence[Namespace], float]] = [
        ("context", request.context, largest_number(request.context))
    ]
    for i, action in enumerate(request.actions):
        if action.id in excluded:
            continue  # never shown to VW
        facts = action_facts(action)
        if facts.largest is None:
            facts.largest = largest_number(action.features)
        places.append((f"actions[{i}].features", action.features, facts.largest))
    for field, namespaces, largest in places:
        if largest <= bound:
            continue
        for i, namespace in enumerate(namespaces):
            for j, feature in enumerate(namespace.features):
                value = feature.value
                if isinstance(value, float) and abs(value) > bound:
                    raise InvalidArgument(
                        f"{field}[{i}].features[{j}].number_value",
                        f"{value!r} is larger in magnitude than {bound:g}: this experiment's "
                        f"vw_args multiply up to {order} feature values together "
                        "(interactions), and VW's 32-bit floats cannot learn from such products "
                        "safely",
                    )


def check_number(field: str, value: float, limit: float = MAX_NUMBER) -> float:
    """Raise InvalidArgument unless `value` is finite and within ±limit."""
    if not math.isfinite(value):
        raise InvalidArgument(field, f"{value!r} is not a finite number")
    if abs(value) > limit:
        raise InvalidArgument(
            field,
            f"{value!r} is larger in magnitude than {limit:g}, the most VW can learn from safely",
        )
    return value


def within_reward_limit(reward: float) -> float:
    """`reward` brought within ±MAX_REWARD: for values logged or stored before that limit."""
    return max(-MAX_REWARD, min(MAX_REWARD, reward))


def check_id(field: str, value: str, what: str) -> None:
    if not value:
        raise InvalidArgument(field, f"{what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(
            field, f"{what} {describe(value)} is longer than {MAX_ID_LENGTH} characters"
        )


@dataclass(frozen=True, slots=True)
class RankInput:
    """A rank request as the core sees it; validated on construction, nothing wire-specific.

    `event_id` may be empty (the caller assigns one before deciding).
    """

    experiment: str
    event_id: str
    context: tuple[Namespace, ...]
    actions: tuple[Action, ...]
    excluded_action_ids: tuple[str, ...] = ()
    defer_activation: bool = False
    user_id: str = ""

    def __post_init__(self) -> None:
        if self.event_id:
            check_id("event_id", self.event_id, "event_id")
        if len(self.user_id) > MAX_ID_LENGTH:
            raise InvalidArgument(
                "user_id", f"{describe(self.user_id)} is longer than {MAX_ID_LENGTH} characters"
            )
        check_namespaces("context", self.context)
        if not self.actions:
            raise InvalidArgument("actions", "no actions given; at least one is needed")
        positions: dict[str, int] = {}
        for i, action in enumerate(self.actions):
            action_id = action.id
            if not action_id or len(action_id) > MAX_ID_LENGTH:  # the path only when needed
                check_id(f"actions[{i}].id", action_id, "action id")
            first = positions.setdefault(action_id, i)
            if first != i:
                raise InvalidArgument(
                    f"actions[{i}].id", f"{describe(action.id)} repeats actions[{first}].id"
                )
            facts = action_facts(action)
            if not facts.checked:
                check_namespaces(f"actions[{i}].features", action.features)
                facts.checked = True
        excluded_seen: dict[str, int] = {}
        for i, action_id in enumerate(self.excluded_action_ids):
            if action_id not in positions:
                raise InvalidArgument(
                    f"excluded_action_ids[{i}]", f"{describe(action_id)} is not among the actions"
                )
            first = excluded_seen.setdefault(action_id, i)
            if first != i:
                raise InvalidArgument(
                    f"excluded_action_ids[{i}]",
                    f"{describe(action_id)} repeats excluded_action_ids[{first}]",
                )
        if len(excluded_seen) == len(self.actions):
            raise InvalidArgument(
                "excluded_action_ids",
                f"all {len(self.actions)} actions are excluded; at least one must remain",
            )

    def candidates(self) -> tuple[Action, ...]:
        """The actions that may be chosen: all of them minus the excluded, in request order."""
        if not self.excluded_action_ids:
            return self.actions
        excluded = set(self.excluded_action_ids)
        return tuple(action for action in self.actions if action.id not in excluded)


def namespaces_from_mapping(
    mapping: Mapping[str, Mapping[str, FeatureValue]],
) -> tuple[Namespace, ...]:
    """Plain-dict features ({"User": {"segment": "a"}}) as namespaces, for simulators."""
    return tuple(
        Namespace(name, tuple(Feature(fname, value) for fname, value in features.items()))
        for name, features in mapping.items()
    )


def action_from_mapping(mapping: Mapping[str, object]) -> Action:
    """{"id": "v1", "features": {"Action": {...}}} as an Action."""
    features = mapping.get("features", {})
    assert isinstance(features, Mapping)
    return Action(str(mapping["id"]), namespaces_from_mapping(features))


@dataclass(frozen=True, slots=True)
class RankResult:
    """What Rank answers: the drawn action first, every candidate once, and the model version."""

    event_id: str
    ranking: tuple[tuple[str, float], ...]
    model_version: str

    @property
    def chosen_action_id(self) -> str:
        return self.ranking[0][0]
