"""DSJSON text: what VW learns from, what the export writes, and what VW actually reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bandit_server.core.dsjson import (
    DecisionRecord,
    Label,
    context_json,
    export_line,
    learning_line,
    prediction_line,
)
from bandit_server.core.types import Action, Feature, Namespace, namespaces_from_mapping
from bandit_server.learners.vw import VWPolicy

LABEL_KEYS = ["_label_cost", "_label_probability", "_label_Action", "_labelIndex"]
CONTEXT = namespaces_from_mapping({"User": {"segment": "s1", "age": 31.5, "mobile": True}})
ACTIONS = tuple(
    Action(f"a{k}", namespaces_from_mapping({"Action": {"variant": f"v{k}"}})) for k in range(3)
)
C_JSON = context_json(CONTEXT, ACTIONS)
LABEL = Label(chosen_index=2, probability=1 / 3, cost=-1.0)


def _keys(line: str) -> list[str]:
    return [key for key, _ in json.loads(line, object_pairs_hook=lambda pairs: pairs)]


def _record(**changes: object) -> DecisionRecord:
    fields: dict[str, object] = {
        "event_id": "ev-1",
        "timestamp": "2024-05-01T12:00:00.000000Z",
        "c_json": C_JSON,
        "ranking_indices": (2, 0, 1),
        "ranking_probabilities": (0.8666666666666667, 0.06666666666666667, 0.06666666666666667),
        "model_version": "epoch-17",
        "label": LABEL,
    }
    fields.update(changes)
    return DecisionRecord(**fields)  # type: ignore[arg-type]


def test_context_json_is_compact_shared_namespaces_then_multi() -> None:
    """`c` is compact JSON: shared namespaces first, then `_multi` with one object per candidate."""
    assert C_JSON == (
        '{"User":{"segment":"s1","age":31.5,"mobile":true},'
        '"_multi":[{"Action":{"variant":"v0"}},{"Action":{"variant":"v1"}},'
        '{"Action":{"variant":"v2"}}]}'
    )
    assert prediction_line(C_JSON) == '{"c":' + C_JSON + "}"


def test_feature_values_are_encoded_as_vw_json_expects() -> None:
    """Strings stay strings, numbers are JSON numbers, true is true, false is left out."""
    context = (
        Namespace(
            "N",
            (
                Feature("s", "x"),
                Feature("n", 2.0),
                Feature("z", 0.0),
                Feature("t", True),
                Feature("f", False),
                Feature("e", ""),
            ),
        ),
        Namespace("Off", (Feature("only", False),)),
    )
    parsed = json.loads(context_json(context, (Action("a", ()),)))
    assert parsed == {
        "N": {"s": "x", "n": 2.0, "z": 0.0, "t": True, "e": ""},
        "Off": {},
        "_multi": [{}],
    }
    assert type(parsed["N"]["t"]) is bool and type(parsed["N"]["n"]) is float


def test_learning_line_puts_label_keys_before_c() -> None:
    """In `learning_line` the four label keys come first and `c` last, with the exact `c` text."""
    line = learning_line(C_JSON, LABEL)
    assert _keys(line) == [*LABEL_KEYS, "c"]
    assert line.endswith(',"c":' + C_JSON + "}")
    parsed = json.loads(line)
    assert parsed["_label_cost"] == -1.0
    assert parsed["_label_probability"] == 1 / 3  # float repr round-trips exactly
    assert parsed["_label_Action"] == 3 and parsed["_labelIndex"] == 2


def test_vw_learns_from_learning_line_but_not_from_labels_after_c() -> None:
    """VW learns from our line but silently ignores the same labels placed after `c`."""
    probe = prediction_line(C_JSON)
    ours = VWPolicy("--cb_explore_adf --epsilon 0.2")
    before = ours.predict_one(probe)
    for _ in range(5):
        ours.learn_one(learning_line(C_JSON, LABEL))
    assert ours.predict_one(probe) != before
    assert ours.predict_one(probe)[0][0] == LABEL.chosen_index  # cost -1: the best action

    labels = learning_line(C_JSON, LABEL)[1 : -len(',"c":' + C_JSON + "}")]
    misordered = '{"c":' + C_JSON + "," + labels + "}"
    assert json.loads(misordered) == json.loads(learning_line(C_JSON, LABEL))
    ignored = VWPolicy("--cb_explore_adf --epsilon 0.2")
    for _ in range(5):
        ignored.learn_one(misordered)
    assert ignored.predict_one(probe) == before


def test_export_line_puts_labels_before_c_and_round_trips() -> None:
    """A learned export line has the label keys before `c` and the documented fields."""
    line = export_line(_record())
    keys = _keys(line)
    assert keys[:4] == LABEL_KEYS
    assert keys.index("c") > 3
    assert ',"c":' + C_JSON + ',"p":' in line  # the logged `c` text, byte for byte
    assert json.loads(line) == {
        "_label_cost": -1.0,
        "_label_probability": 1 / 3,
        "_label_Action": 3,
        "_labelIndex": 2,
        "Timestamp": "2024-05-01T12:00:00.000000Z",
        "Version": "1",
        "EventId": "ev-1",
        "a": [3, 1, 2],
        "c": json.loads(C_JSON),
        "p": [0.8666666666666667, 0.06666666666666667, 0.06666666666666667],
        "VWState": {"m": "epoch-17"},
    }


def test_export_line_marks_unlabelled_and_deferred_decisions() -> None:
    """No label: `_skipLearn` true (before `c`) and no label keys; deferred: `DeferredAction`."""
    skipped = json.loads(export_line(_record(label=None)))
    assert skipped["_skipLearn"] is True
    assert not set(LABEL_KEYS) & set(skipped)
    assert "DeferredAction" not in skipped
    assert _keys(export_line(_record(label=None)))[0] == "_skipLearn"
    deferred = json.loads(export_line(_record(deferred=True)))
    assert deferred["DeferredAction"] is True
    assert "_skipLearn" not in deferred


def test_vw_learns_from_an_exported_line() -> None:
    """An exported learned line is a valid training line: VW's prediction moves toward it."""
    probe = prediction_line(C_JSON)
    policy = VWPolicy("--cb_explore_adf --epsilon 0.2")
    before = policy.predict_one(probe)
    policy.learn_one(export_line(_record()))
    assert policy.predict_one(probe) != before


def test_non_ascii_feature_names_and_values_survive() -> None:
    """Non-ASCII names and values are kept unescaped and read back unchanged by json and VW."""
    actions = (
        Action("a", (Namespace("Größe", (Feature("名前", "日本語 ✓"), Feature("ñ", 1.5))),)),
        Action("b", (Namespace("Größe", (Feature("名前", "emoji 🎲"),)),)),
    )
    context = (Namespace("Usuário", (Feature("cidade", "São Paulo"),)),)
    c_json = context_json(context, actions)
    assert "São Paulo" in c_json and "🎲" in c_json  # not \u-escaped: the log keeps the text
    record = _record(c_json=c_json, ranking_indices=(1, 0), ranking_probabilities=(0.5, 0.5))
    parsed = json.loads(export_line(record))
    assert parsed["c"]["Usuário"] == {"cidade": "São Paulo"}
    assert parsed["c"]["_multi"][0] == {"Größe": {"名前": "日本語 ✓", "ñ": 1.5}}
    assert parsed["c"]["_multi"][1] == {"Größe": {"名前": "emoji 🎲"}}
    policy = VWPolicy("--cb_explore_adf --epsilon 0.2")
    for _ in range(5):
        policy.learn_one(learning_line(c_json, Label(1, 0.5, -1.0)))
    assert policy.predict_one(prediction_line(c_json))[0][0] == 1


_NON_ASCII_NAMESPACE_SCRIPT = textwrap.dedent(
    """
    from bandit_server.core.dsjson import Label, context_json, learning_line, prediction_line
    from bandit_server.core.types import Action, Feature, Namespace, RankInput
    from bandit_server.errors import InvalidArgument
    from bandit_server.learners.vw import VWPolicy

    for name in ("Ärger", "é", "名前", "🎲"):
        actions = tuple(
            Action(i, (Namespace(name, (Feature("v", i),)),)) for i in ("x", "y")
        )
        try:
            request = RankInput("exp", "e1", (), actions)
        except InvalidArgument:
            continue  # rejected up front: fine
        c_json = context_json(request.context, request.candidates())
        policy = VWPolicy("--cb_explore_adf --epsilon 0.2")
        policy.predict_one(prediction_line(c_json))
        policy.learn_one(learning_line(c_json, Label(0, 0.5, -1.0)))
        del policy
    """
)


def test_a_namespace_starting_with_a_non_ascii_letter_is_rejected_or_handled() -> None:
    """A namespace starting with a non-ASCII letter is rejected or learned, never a crash."""
    result = subprocess.run(
        [sys.executable, "-c", _NON_ASCII_NAMESPACE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],  # the repository root, so the package imports
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])


_NAMES = st.text(alphabet="abcxyz", min_size=1, max_size=3)
_VALUES = st.one_of(
    st.text(max_size=4), st.floats(allow_nan=False, allow_infinity=False), st.booleans()
)
_NAMESPACES = st.lists(
    st.tuples(_NAMES, st.dictionaries(_NAMES, _VALUES, max_size=3)),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(lambda pairs: namespaces_from_mapping(dict(pairs)))


def _reference_c(context: tuple[Namespace, ...], actions: tuple[Action, ...]) -> str:
    def objects(namespaces: tuple[Namespace, ...]) -> dict[str, dict[str, object]]:
        return {
            ns.name: {f.name: f.value for f in ns.features if f.value is not False}
            for ns in namespaces
        }

    shared: dict[str, object] = dict(objects(context))
    shared["_multi"] = [objects(action.features) for action in actions]
    return json.dumps(shared, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@settings(deadline=None)
@given(context=_NAMESPACES, action_features=st.lists(_NAMESPACES, min_size=1, max_size=4))
def test_context_json_is_the_plain_encoding_of_the_whole_object(
    context: tuple[Namespace, ...], action_features: list[tuple[Namespace, ...]]
) -> None:
    """Built from per-action pieces (kept between calls), it equals encoding the object at once."""
    actions = tuple(Action(f"a{k}", features) for k, features in enumerate(action_features))
    expected = _reference_c(context, actions)
    assert context_json(context, actions) == expected
    assert context_json(context, actions) == expected  # the actions' JSON now comes from memo
