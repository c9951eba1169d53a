"""ExperimentModel on a real VW model: what happens around an event that breaks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bandit_server.core.dsjson import context_json
from bandit_server.core.types import Action, namespaces_from_mapping
from bandit_server.engine import model as model_module
from bandit_server.engine.model import ExperimentModel, UnlearnableEvent
from bandit_server.errors import Unavailable
from bandit_server.learners.vw import VWPolicy
from bandit_server.storage.records import LearnItem

ARGS = "--cb_explore_adf --ftrl --squarecb"
ACTIONS = tuple(
    Action(f"a{i}", namespaces_from_mapping({"Action": {"k": f"k{i}"}})) for i in range(3)
)


def _item(seq: int, x: float, cost: float) -> LearnItem:
    c_json = context_json(namespaces_from_mapping({"User": {"x": x}}), ACTIONS)
    return LearnItem(seq, f"e{seq}", c_json, 0, 0.5, cost)


def test_an_event_that_breaks_the_model_is_reported_and_rank_waits_for_the_restore() -> None:
    model = ExperimentModel(ARGS, "epoch", 0.0)
    assert model.learn(_item(1, 1.0, -1.0))
    version = model.version
    with pytest.raises(UnlearnableEvent) as raised:
        model.learn(_item(2, 1e10, -1e15))
    assert raised.value.damaged and "nan" in raised.value.reason
    assert (model.learned_seq, model.learned_count, model.version) == (1, 1, version)
    with pytest.raises(Unavailable):  # never NaN probabilities
        model.predict(_item(3, 1.0, 0.0).c_json)
    rebuilt, independent = ExperimentModel(ARGS, "epoch", 0.0), ExperimentModel(ARGS, "e", 0.0)
    rebuilt.learn(_item(1, 1.0, -1.0))
    independent.learn(_item(1, 1.0, -1.0))
    model.restore_from(rebuilt)
    model.skip(2)
    pmf, served = model.predict(_item(3, 1.0, 0.0).c_json)
    assert served == version and pmf == independent.predict(_item(3, 1.0, 0.0).c_json)[0]
    assert model.learn(_item(3, 1.0, -1.0)) and model.learned_seq == 3


def test_an_interval_set_while_the_model_is_damaged_takes_effect_once_it_is_restored() -> None:
    """Before, Rank went back to the snapshot taken when the model was made (0 events), since
    a damaged model cannot publish a fresh one (found by review)."""
    model = ExperimentModel(ARGS, "epoch", 0.0)
    for seq in range(1, 4):
        model.learn(_item(seq, 0.1 * seq, -1.0))
    with pytest.raises(UnlearnableEvent):
        model.learn(_item(4, 1e10, -1e15))
    model.set_update_interval(60.0)
    with pytest.raises(Unavailable):  # still live, and still waiting for the restore
        model.predict(_item(5, 1.0, 0.0).c_json)
    rebuilt = ExperimentModel(ARGS, "epoch", 0.0)
    for seq in range(1, 4):
        rebuilt.learn(_item(seq, 0.1 * seq, -1.0))
    model.restore_from(rebuilt)
    assert model.update_interval == 60.0
    pmf, served = model.predict(_item(5, 1.0, 0.0).c_json)
    assert served == model.version and served.endswith("-3")
    assert pmf == rebuilt.predict(_item(5, 1.0, 0.0).c_json)[0]


def test_snapshots_slow_to_make_are_spaced_past_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Making a snapshot holds the GIL, so every call waits meanwhile: when it takes 0.5 s,
    snapshots come every 25 s (2% of the time), not every second. The least of the last three
    costs counts, so one slow among fast ones (a busy moment) does not space out the next ones,
    and the snapshot made at start (the busiest moment) does not count."""
    cpu, cost = [0.0], [0.5]
    load = VWPolicy.load

    def slow_load(vw_args: str, data: bytes) -> VWPolicy:
        cpu[0] += cost[0]
        return load(vw_args, data)

    monkeypatch.setattr(model_module, "_cpu", lambda: cpu[0])
    monkeypatch.setattr(VWPolicy, "load", staticmethod(slow_load))
    model = ExperimentModel(ARGS, "epoch", 1.0)
    assert model.publish_spacing == 1.0
    seq = iter(range(1, 100))
    model.learn(_item(next(seq), 1.0, -1.0))
    assert model.publish_due(model.last_publish + 1.0)
    model.publish()
    model.learn(_item(next(seq), 1.0, -1.0))
    assert model.publish_spacing == pytest.approx(25.0)
    assert not model.publish_due(model.last_publish + 1.0)
    assert model.publish_due(model.last_publish + 25.0)
    cost[0] = 0.001  # the model got cheaper to copy
    model.publish()
    model.learn(_item(next(seq), 1.0, -1.0))
    assert model.publish_spacing == 1.0  # 0.001 s is 0.1% of the interval
    cost[0] = 0.5  # one slow one among fast ones
    model.publish()
    model.learn(_item(next(seq), 1.0, -1.0))
    assert model.publish_due(model.last_publish + 1.0)


def test_a_number_past_the_interaction_bound_is_refused_before_vw_sees_it() -> None:
    model = ExperimentModel(ARGS + " -q UA", "epoch", 0.0)
    with pytest.raises(UnlearnableEvent) as raised:
        model.learn(_item(1, 2e15, -1.0))
    assert not raised.value.damaged and "2000000000000000.0" in raised.value.reason
    assert model.learned_count == 0 and not model.damaged


_SYNTHCOVER_SCRIPT = """
from bandit_server.engine.model import ExperimentModel, UnlearnableEvent
from tests.unit.test_model import _item
model = ExperimentModel("--cb_explore_adf --ftrl --synthcover", "epoch", 0.0)
for seq in range(1, 21):
    model.learn(_item(seq, 0.1 * seq, -float(seq % 2)))
try:
    model.learn(_item(21, 1e10, -1e15))
except UnlearnableEvent as error:
    print("damaged" if error.damaged else "refused", error.reason)
"""


def test_an_event_that_would_make_synthcover_predict_forever_is_caught_before_predicting(
    tmp_path: Path,
) -> None:
    """--synthcover never returns from a prediction once a weight is NaN, and holds the GIL
    meanwhile: the whole server hung, and every restart too (found by an adversarial run).
    In a child process, so a regression fails this test instead of hanging the suite."""
    done = subprocess.run(
        [sys.executable, "-c", _SYNTHCOVER_SCRIPT],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.startswith("damaged") and "non-finite weights" in done.stdout


def test_a_model_left_predicting_all_zeros_counts_as_broken() -> None:
    """--ftrl --regcb after the same event predicts probabilities of 0: finite, yet Rank
    cannot draw from them (every Rank was INTERNAL, after restarts too)."""
    model = ExperimentModel("--cb_explore_adf --ftrl --regcb", "epoch", 0.0)
    for seq in range(1, 21):
        model.learn(_item(seq, 0.1 * seq, -float(seq % 2)))
    with pytest.raises(UnlearnableEvent) as raised:
        model.learn(_item(21, 1e10, -1e15))
    assert raised.value.damaged
