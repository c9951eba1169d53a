"""Rebuilding an experiment's state from the log: the model (checkpoint + replay) and its open
reward windows. The model is derived state; this is what makes that true."""

from __future__ import annotations

import time

import structlog

from bandit_server.core.joiner import OpenEvent
from bandit_server.engine.model import ExperimentModel, UnlearnableEvent
from bandit_server.learners.vw import VWPolicy, resumable
from bandit_server.storage.models import ModelStore
from bandit_server.storage.records import LearnItem
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
    """The newest usable checkpoint, then every learned row after it, in learned order, but
    those unlearnable under `vw_args`; one newly found so is recorded, then skipped."""
    # A checkpoint past the log's last learned row holds events the log lost (synchronous=NORMAL
    # and a power cut); new events would reuse its seqs. The log is the truth: drop such files.
    store.discard_after(experiment, decision_log.max_learned_seq(experiment))
    while True:
        model, checkpoint_seq, replayed = _replay(
            decision_log, store, experiment, vw_args, epoch, update_interval
        )
        if model is not None:
            break
    if replayed:
        model.publish()
    log.info(
        "model_restored",
        experiment=experiment,
        checkpoint_seq=checkpoint_seq,
        replayed=replayed,
        learned_count=model.learned_count,
    )
    return model


def _replay(
    decision_log: SQLiteDecisionLog,
    store: ModelStore,
    experiment: str,
    vw_args: str,
    epoch: str,
    update_interval: float,
) -> tuple[ExperimentModel | None, int | None, int]:
    """(model, checkpoint seq, events replayed); no model when an event broke it and the
    replay must start over without that event."""
    # Models VW cannot resume exactly are rebuilt from the whole learned log instead.
    checkpoint = store.latest(experiment, epoch) if resumable(vw_args) else None
    policy: VWPolicy | None = None
    seq = count = 0
    if checkpoint is not None and checkpoint.vw_args == vw_args:
        policy = VWPolicy.load(vw_args, checkpoint.model)
        seq, count = checkpoint.learned_seq, checkpoint.learned_count
    model = ExperimentModel(vw_args, epoch, update_interval, policy, seq, count)
    replayed = 0
    items = decision_log.learn_items(experiment, vw_args, seq)
    try:
        for item in items:
            try:
                replayed += model.learn(item)
            except UnlearnableEvent as exc:
                mark_unlearnable(decision_log, experiment, vw_args, item, exc)
                if exc.damaged:
                    return None, None, 0
                model.skip(item.seq)
            except Exception:
                # As the learner does: stop at the event VW rejects rather than skip it, and
                # serve what was learned before it; the server must still start.
                model.stalled = True
                log.exception("learning_stalled", experiment=experiment, event_id=item.event_id)
                break
    finally:
        items.close()
    return model, seq if checkpoint is not None else None, replayed


def mark_unlearnable(
    decision_log: SQLiteDecisionLog,
    experiment: str,
    vw_args: str,
    item: LearnItem,
    error: UnlearnableEvent,
) -> None:
    """Record, before anything could checkpoint past it, that the model skips `item`."""
    decision_log.mark_unlearnable(
        experiment, vw_args, item.seq, item.event_id, error.reason, time.time()
    )
    log.warning(
        "event_unlearnable", experiment=experiment, event_id=item.event_id, reason=error.reason
    )


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
