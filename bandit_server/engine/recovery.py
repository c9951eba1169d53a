"""Rebuilding an experiment's state from the log: the model (checkpoint + replay) and its open
reward windows. The model is derived state; this is what makes that true."""

from __future__ import annotations

import structlog

from bandit_server.core.joiner import OpenEvent
from bandit_server.engine.model import ExperimentModel
from bandit_server.learners.vw import VWPolicy, resumable
from bandit_server.storage.models import ModelStore
from bandit_server.storage.sqlite_log import SQLiteDecisionLog

log = structlog.get_logger(__name__)


def restore_model(
    decision_log: SQLiteDecisionLog,
    store: ModelStore,
    experiment: str,
    vw_args: str,
    epoch: str,
    update_interval: float,
) -> ExperimentModel:
    """The newest usable checkpoint, then every learned row after it, in learned order."""
    # A checkpoint past the log's last learned row holds events the log lost (synchronous=NORMAL
    # and a power cut); new events would reuse its seqs. The log is the truth: drop such files.
    store.discard_after(experiment, decision_log.max_learned_seq(experiment))
    # Models VW cannot resume exactly are rebuilt from the whole learned log instead.
    checkpoint = store.latest(experiment, epoch) if resumable(vw_args) else None
    policy: VWPolicy | None = None
    seq = count = 0
    if checkpoint is not None and checkpoint.vw_args == vw_args:
        policy = VWPolicy.load(vw_args, checkpoint.model)
        seq, count = checkpoint.learned_seq, checkpoint.learned_count
    model = ExperimentModel(vw_args, epoch, update_interval, policy, seq, count)
    replayed = 0
    for item in decision_log.learn_items(experiment, seq):
        try:
            replayed += model.learn(item)
        except Exception:
            # As the learner does: stop at the event VW rejects rather than skip it, and serve
            # what was learned before it; the server must still start.
            model.stalled = True
            log.exception("learning_stalled", experiment=experiment, event_id=item.event_id)
            break
    if replayed:
        model.publish()
    log.info(
        "model_restored",
        experiment=experiment,
        checkpoint_seq=seq if checkpoint is not None else None,
        replayed=replayed,
        learned_count=model.learned_count,
    )
    return model


def open_events(decision_log: SQLiteDecisionLog, experiment: str) -> list[OpenEvent]:
    """Events whose window was not closed when the server stopped, with their in-window inputs."""
    closed_until = decision_log.closed_until(experiment)
    events = {
        row.event_id: OpenEvent(row.event_id, row.deadline, row.deferred)
        for row in decision_log.open_decisions(experiment, closed_until)
    }
    rewards, activated = decision_log.open_inputs(experiment, closed_until)
    for event_id in activated:
        events[event_id].activated = True
    for event_id, value in rewards:
        event = events[event_id]
        if event.first_reward is None:
            event.first_reward = value
        event.reward_sum += value
        event.reward_count += 1
    return list(events.values())
