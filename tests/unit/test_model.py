"""ExperimentModel on a real VW model: what happens around an event that breaks it."""

from __future__ import annotations

import pytest

from bandit_server.core.dsjson import context_json
from bandit_server.core.types import Action, namespaces_from_mapping
from bandit_server.engine.model import ExperimentModel, UnlearnableEvent
from bandit_server.errors import Unavailable
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


def test_a_number_past_the_interaction_bound_is_refused_before_vw_sees_it() -> None:
    model = ExperimentModel(ARGS + " -q UA", "epoch", 0.0)
    with pytest.raises(UnlearnableEvent) as raised:
        model.learn(_item(1, 2e15, -1.0))
    assert not raised.value.damaged and "2000000000000000.0" in raised.value.reason
    assert model.learned_count == 0 and not model.damaged
