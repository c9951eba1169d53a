"""The one way VW examples are built: DSJSON text, as VW's DSJsonFormatParser reads it.

The decision log stores the exact `c` text a decision was predicted on, so the learner, the export
and any VW tool see byte-for-byte the same example.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from bandit_server.core.types import Action, FeatureValue, Namespace, action_facts

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _namespace_object(namespaces: Sequence[Namespace]) -> dict[str, dict[str, FeatureValue]]:
    out: dict[str, dict[str, FeatureValue]] = {}
    for namespace in namespaces:
        features: dict[str, FeatureValue] = {}
        for feature in namespace.features:
            value = feature.value
            if value is False:
                continue  # VW's convention: false is absent
            features[feature.name] = value
        out[namespace.name] = features
    return out


def namespaces_json(namespaces: Sequence[Namespace]) -> str:
    """{"namespace": {"feature": value, ...}, ...} as compact JSON."""
    return str(_dumps(_namespace_object(namespaces)))


def action_json(action: Action) -> str:
    """One `_multi` entry; kept with the action's facts (core.types.action_facts)."""
    facts = action_facts(action)
    if facts.json is None:
        facts.json = namespaces_json(action.features)
    return facts.json


def context_json(context: Sequence[Namespace], candidates: Sequence[Action]) -> str:
    """The DSJSON `c` object: shared namespaces, then `_multi` with one entry per candidate.

    Context namespace names never start with '_' (RankInput checks), so none is `_multi`."""
    shared = namespaces_json(context)
    multi = '"_multi":[' + ",".join([action_json(action) for action in candidates]) + "]}"
    return shared[:-1] + ("," if len(shared) > 2 else "") + multi


def prediction_line(c_json: str) -> str:
    """A DSJSON line with no label: what Rank predicts on."""
    return '{"c":' + c_json + "}"


@dataclass(frozen=True, slots=True)
class Label:
    """What VW learns from one decision: the chosen candidate, its logged probability, its cost."""

    chosen_index: int  # 0-based position in `_multi`
    probability: float
    cost: float


def _number(value: float) -> str:
    # The learner writes two per event: repr is JSON's own text for a finite float, without
    # the encoder json builds per call (~1.5 us each).
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return str(_dumps(value))  # ints as JSON writes them; NaN and infinities raise


def _label_keys(label: Label) -> str:
    return (
        '"_label_cost":'
        + _number(label.cost)
        + ',"_label_probability":'
        + _number(label.probability)
        + ',"_label_Action":'
        + str(label.chosen_index + 1)
        + ',"_labelIndex":'
        + str(label.chosen_index)
    )


def learning_line(c_json: str, label: Label) -> str:
    """A labelled DSJSON line. The label keys come before `c`: VW ignores them otherwise."""
    return "{" + _label_keys(label) + ',"c":' + c_json + "}"


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """Everything one exported DSJSON line needs."""

    event_id: str
    timestamp: str  # ISO 8601, UTC, with a 'Z'
    c_json: str
    ranking_indices: tuple[int, ...]  # 0-based `_multi` positions, chosen first
    ranking_probabilities: tuple[float, ...]
    model_version: str
    label: Label | None  # None: never learned
    deferred: bool = False


def export_line(record: DecisionRecord) -> str:
    """One DSJSON line in the layout VW and Personalizer use; `_skipLearn` marks unlearned ones."""
    head = '"_skipLearn":true,' if record.label is None else _label_keys(record.label) + ","
    return (
        "{"
        + head
        + '"Timestamp":'
        + _dumps(record.timestamp)
        + ',"Version":"1","EventId":'
        + _dumps(record.event_id)
        + (',"DeferredAction":true' if record.deferred else "")
        + ',"a":'
        + _dumps([i + 1 for i in record.ranking_indices])
        + ',"c":'
        + record.c_json
        + ',"p":'
        + _dumps(list(record.ranking_probabilities))
        + ',"VWState":{"m":'
        + _dumps(record.model_version)
        + "}}"
    )
