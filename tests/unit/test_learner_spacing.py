"""The learner spaces checkpoints and says when snapshots are spaced past their interval."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bandit_server.engine import model as model_module
from bandit_server.engine.learner import Learner
from bandit_server.engine.model import ExperimentModel
from bandit_server.learners.vw import VWPolicy
from bandit_server.storage.models import DirectoryModelStore
from bandit_server.storage.sqlite_log import SQLiteDecisionLog
from tests.unit.test_model import ARGS, _item


@pytest.fixture
def decision_log(tmp_path: Path) -> Iterator[SQLiteDecisionLog]:
    log = SQLiteDecisionLog(tmp_path / "data", "NORMAL")
    yield log
    log.close()


def test_checkpoints_slow_to_serialize_are_spaced_past_their_interval(
    tmp_path: Path, decision_log: SQLiteDecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serializing for a checkpoint holds the GIL too: after a pass that spent 10 s
    serializing, the next comes 500 s later (2% of the time), not after the 30 s interval. The
    least of the last three passes counts: one cheap pass brings the interval back, one slow
    pass among cheap ones does not space them out."""
    cpu, cost = [0.0], [10.0]
    serialize = VWPolicy.serialize

    def slow_serialize(policy: VWPolicy) -> bytes:
        cpu[0] += cost[0]
        return serialize(policy)

    monkeypatch.setattr(model_module, "_cpu", lambda: cpu[0])
    monkeypatch.setattr(VWPolicy, "serialize", slow_serialize)
    model = ExperimentModel(ARGS, "epoch", 0.0)
    learner = Learner(
        decision_log, DirectoryModelStore(tmp_path / "models"), lambda: {"x": model}, 30.0
    )
    seq = iter(range(1, 100))

    def checkpoints_after(seconds: float) -> bool:
        model.learn(_item(next(seq), 1.0, -1.0))
        before = model.checkpointed_seq
        learner._last_checkpoint -= seconds
        learner._maintain()
        return model.checkpointed_seq != before

    assert not checkpoints_after(0.0)  # within the interval
    assert checkpoints_after(31.0)
    assert not checkpoints_after(31.0)
    assert checkpoints_after(470.0)  # 501 s after the last one
    cost[0] = 0.001
    assert not checkpoints_after(31.0)
    assert checkpoints_after(470.0)  # this pass was cheap
    assert checkpoints_after(31.0)  # so the interval again
    cost[0] = 10.0
    assert checkpoints_after(31.0)  # one slow pass among cheap ones
    assert checkpoints_after(31.0)  # does not space them out


def test_spacing_is_logged_when_it_starts_and_stops_with_a_margin(
    tmp_path: Path, decision_log: SQLiteDecisionLog
) -> None:
    """A snapshot cost near 2% of the interval must not flip the log line back and forth."""
    model = ExperimentModel(ARGS, "epoch", 1.0)
    learner = Learner(decision_log, DirectoryModelStore(tmp_path / "models"), dict, 30.0)
    events = []
    with capture_logs() as captured:
        for cost in (0.021, 0.03, 0.021, 0.024, 0.01, 0.021, 0.03):
            model._publish_times = (cost,)
            learner._log_spacing("x", model)
            events.append(captured[-1]["event"] if captured else None)
            captured.clear()
    assert events == [
        None,  # spacing 1.05 s: past the interval, within the margin
        "snapshot_interval_stretched",  # 1.5 s
        None,
        None,
        "snapshot_interval_kept",  # back to the interval
        None,
        "snapshot_interval_stretched",
    ]
