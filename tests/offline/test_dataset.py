"""DSJSON logs read into columns: fields, layouts, tolerance of foreign keys, and named errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

from bandit_server.errors import InvalidArgument
from bandit_server.offline.dataset import DEFAULT_NAMESPACE, load_dsjson
from tests.offline.logs import make_log

C = {
    "User": {"segment": "a"},
    "_multi": [{"Action": {"v": "v0"}}, {"Action": {"v": "v1"}}, {"Action": {"v": "v2"}}],
}
C_TEXT = json.dumps(C, separators=(",", ":"))


def personalizer_line(**override: object) -> str:
    line: dict[str, object] = {
        "_label_cost": -1.0,
        "_label_probability": 0.25,
        "_label_Action": 2,
        "_labelIndex": 1,
        "Timestamp": "2026-11-22T10:00:00.000000Z",
        "Version": "1",
        "EventId": "e1",
        "a": [2, 1, 3],
        "c": C,
        "p": [0.25, 0.5, 0.25],
        "VWState": {"m": "model-version"},
    }
    line.update(override)
    return json.dumps({k: v for k, v in line.items() if v is not None}, separators=(",", ":"))


def test_reads_every_field_of_a_labelled_line() -> None:
    """A labelled line gives its id, time, c text, chosen index, propensity, reward and pmf."""
    data = load_dsjson([personalizer_line()])
    event = data.event(0)
    assert event.event_id == "e1"
    assert event.timestamp == "2026-11-22T10:00:00.000000Z"
    assert event.model_version == "model-version"
    assert event.c_json == C_TEXT
    assert (event.n_actions, event.chosen_index, event.probability) == (3, 1, 0.25)
    assert event.reward == 1.0
    assert event.logged_pmf == (0.5, 0.25, 0.25)  # `a` is 1-based; pmf is in `_multi` order
    assert not event.skip_learn
    assert data.k == 3 and data.n_skipped == 0


def test_keeps_the_original_c_text_byte_for_byte() -> None:
    """The c text is the exact span of the line, spacing and number spelling included."""
    c_text = '{"User":{"segment":"a","x":1e2},"_multi":[{"A":{"v":"v0"}},{"A":{"v":"v1"}}]}'
    line = (
        '{"_label_cost":0,"_label_probability":0.5,"_label_Action":1,"_labelIndex":0,'
        f'"a":[1,2],"c":{c_text},"p":[0.5,0.5]}}'
    )
    assert load_dsjson([line]).c_jsons[0] == c_text


def test_labels_after_c_are_read_and_moved_before_c_for_vw() -> None:
    """Foreign key order (labels after c) still yields the label, and VW's line puts it first."""
    line = (
        '{"c":'
        + C_TEXT
        + ',"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,'
        + '"a":[1,2,3],"p":[0.5,0.25,0.25]}'
    )
    data = load_dsjson([line])
    assert (data.actions[0], data.rewards[0], data.propensities[0]) == (0, 1.0, 0.5)
    assert data.vw_lines[0].index('"_label_cost"') < data.vw_lines[0].index('"c":')


def test_a_feature_named_c_inside_the_context_is_not_mistaken_for_c() -> None:
    """A nested key "c" before the real one does not confuse the c locator."""
    nested = {"o": [{"c": {"x": 1}}]}
    line = personalizer_line(**nested)
    # Put "o" (with its nested "c") before the top-level c.
    obj = json.loads(line)
    reordered = {"o": obj.pop("o"), **obj}
    data = load_dsjson([json.dumps(reordered, separators=(",", ":"))])
    assert json.loads(data.c_jsons[0]) == C


def test_pretty_printed_lines_are_reencoded_compactly() -> None:
    """Whitespace around keys falls back to a compact re-encoding of the same c."""
    line = json.dumps(json.loads(personalizer_line()), indent=None, separators=(", ", " : "))
    data = load_dsjson([line])
    assert data.c_jsons[0] == C_TEXT


def test_skip_learn_lines_are_kept_without_a_reward() -> None:
    """A _skipLearn line without label keys is kept, chosen = a[0], no reward, counted."""
    line = personalizer_line(
        _label_cost=None,
        _label_probability=None,
        _label_Action=None,
        _labelIndex=None,
        _skipLearn=True,
    )
    data = load_dsjson([personalizer_line(), line])
    assert data.skip_learn.tolist() == [False, True]
    assert data.learnable.tolist() == [True, False]
    assert data.actions[1] == 1 and data.propensities[1] == 0.25
    assert np.isnan(data.rewards[1])
    assert data.n_skipped == 1
    assert any("_skipLearn" in w for w in data.warnings)
    assert data.vw_lines[1] == '{"c":' + C_TEXT + "}"


def test_unknown_personalizer_keys_are_tolerated() -> None:
    """Outcomes, DeferredAction, pdrop and _original_label_cost do not stop the reader."""
    line = personalizer_line(
        o=[{"v": 1.0, "EventId": "e1"}], DeferredAction=False, pdrop=0.1, _original_label_cost=-1.0
    )
    data = load_dsjson([line])
    assert len(data) == 1
    assert any("pdrop" in w for w in data.warnings)


def test_reads_gzip_files_and_skips_blank_lines(tmp_path: Path) -> None:
    """Gzip is detected by its magic bytes; blank lines are skipped; line numbers stay true."""
    path = tmp_path / "log.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(personalizer_line() + "\n\n" + personalizer_line(EventId="e2") + "\n")
    data = load_dsjson(path)
    assert data.event_ids == ("e1", "e2")
    assert data.line_numbers.tolist() == [1, 3]
    assert data.source == str(path)


def test_ragged_action_sets_are_padded_with_zero_probability() -> None:
    """k is the largest action count; shorter events have zero probability beyond their actions."""
    data = load_dsjson(make_log(200, seed=3, min_actions=2, max_actions=6))
    assert data.k == int(data.n_actions.max())
    width = np.arange(data.k)[None, :] >= data.n_actions[:, None]
    assert np.all(data.logged_pmf[width] == 0)
    np.testing.assert_allclose(data.logged_pmf.sum(axis=1), 1.0)


def test_rounded_logged_distributions_are_rescaled_and_reported() -> None:
    """p summing to 0.999 (rounded) is rescaled to sum to 1, and the warning counts it."""
    line = personalizer_line(p=[0.333, 0.333, 0.333], _label_probability=0.333)
    data = load_dsjson([line, personalizer_line()])
    np.testing.assert_allclose(data.logged_pmf[0], [1 / 3, 1 / 3, 1 / 3], rtol=1e-15)
    assert data.propensities[0] == 0.333  # the label's propensity is kept as logged
    assert data.logged_pmf[1].tolist() == [0.5, 0.25, 0.25]
    assert any(w.startswith("1 logged distributions") for w in data.warnings)


def test_namespaces_are_inventoried_including_the_default_one() -> None:
    """Shared and action namespaces are listed; top-level scalar features are VW's default one."""
    c = {"f": 1, "User": {"s": "a"}, "Geo": ["x"], "_multi": [{"Action": {"v": 1}, "g": "x"}]}
    line = personalizer_line(
        c=c, a=[1], p=[1.0], _label_Action=1, _labelIndex=0, _label_probability=1.0
    )
    data = load_dsjson([line])
    assert data.namespaces.shared == (DEFAULT_NAMESPACE, "User", "Geo")
    assert data.namespaces.action == ("Action", DEFAULT_NAMESPACE)


def test_events_make_a_dataframe() -> None:
    """Events are plain records, so pandas builds a frame from them."""
    data = load_dsjson(make_log(20, seed=1))
    frame = pd.DataFrame(list(data.events()))
    assert len(frame) == 20 and "logged_pmf" in frame.columns


def test_sorted_by_time_is_stable() -> None:
    """Time order sorts by Timestamp and keeps file order among equal times."""
    lines = [
        personalizer_line(EventId="late", Timestamp="2026-11-22T10:00:02.000000Z"),
        personalizer_line(EventId="tie1", Timestamp="2026-11-22T10:00:01.0000000Z"),
        personalizer_line(EventId="tie2", Timestamp="2026-11-22T10:00:01.000000Z"),
    ]
    assert load_dsjson(lines).sorted_by_time().event_ids == ("tie1", "tie2", "late")


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ("{not json", "log", "not a JSON object"),
        (personalizer_line(c={"User": {}}), "c._multi", "no actions"),
        (personalizer_line(c=None), "c", "no 'c' object"),
        (personalizer_line(_label_probability=0.0), "_label_probability", "0.0 is not in (0, 1]"),
        (
            personalizer_line(_label_probability=0.3),
            "_label_probability",
            "differs from the logged p",
        ),
        (personalizer_line(p=[0.5, 0.5]), "p", "2 probabilities for 3 actions"),
        (personalizer_line(p=[0.5, 0.5, 0.5]), "p", "sum to 1.5"),
        (personalizer_line(a=[2, 2, 3]), "a", "listed twice"),
        (personalizer_line(a=[2, 1, 7]), "a", "7 is not an action in 1..3"),
        (
            personalizer_line(a=[1, 2, 3], p=[0.25, 0.25, 0.5]),
            "a",
            "a[0]=1 is not the chosen action 2",
        ),
        (personalizer_line(_labelIndex=5), "_labelIndex", "outside the 3 actions"),
        (personalizer_line(_labelIndex=0), "_label_Action", "disagrees with _labelIndex"),
        (personalizer_line(_label_cost=None), "_label_cost", "missing"),
        (personalizer_line(_label_cost="x"), "_label_cost", "'x' is not a finite number"),
        (personalizer_line(_labelIndex=None, _label_Action=None), "_labelIndex", "missing"),
        (personalizer_line(a=None), "a", "'a' and 'p'"),
    ],
)
def test_bad_lines_raise_errors_naming_source_line_and_field(
    line: str, field: str, words: str
) -> None:
    """Each malformed line names the source, its line number, the field and what is wrong."""
    with pytest.raises(InvalidArgument) as info:
        load_dsjson([personalizer_line(), line], name="log.json")
    assert info.value.field == field
    assert "log.json:2:" in str(info.value)
    assert words in str(info.value)


def test_missing_file_and_empty_log_are_named(tmp_path: Path) -> None:
    """A missing path and a log with no events are reported as such."""
    with pytest.raises(InvalidArgument, match="is not a readable file"):
        load_dsjson(tmp_path / "nope.json")
    with pytest.raises(InvalidArgument, match="no events"):
        load_dsjson(["", "  "])


@pytest.mark.parametrize("compressed", [False, True])
def test_a_log_that_is_not_utf8_text_is_named(tmp_path: Path, compressed: bool) -> None:
    """Garbage bytes (a binary file passed as the log) fail with the file and where."""
    good = json.dumps({"_label_cost": 0, "c": {"_multi": [{}]}}) + "\n"
    data = (good * 3).encode() + b"\xff\xfe\x00garbage\n"
    path = tmp_path / ("log.jsonl.gz" if compressed else "log.jsonl")
    path.write_bytes(gzip.compress(data) if compressed else data)
    with pytest.raises(InvalidArgument, match=r"log: .*log\.jsonl.* is not UTF-8 text"):
        load_dsjson(path)
