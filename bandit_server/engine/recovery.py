"""Rebuilding an experiment's state from the log: the model (checkpoint + replay) and its open
reward windows. The model is derived state; this is what makes that true."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bandit_server.core.joiner import OpenEvent
from bandit_server.engine.model import ExperimentModel, UnlearnableEvent
from bandit_server.errors import describe
from bandit_server.learners.vw import VWPolicy, resumable
from bandit_server.storage.models import Checkpoint, ModelStore
from bandit_server.storage.records import DecisionRow, LearnItem
from bandit_server.storage.sqlite_log import SQLiteDecisionLog

log = structlog.get_logger(__name__)


# Events in a row that may be skipped for breaking the model. One more, and the damage is likely
# upstream (an earlier event left VW's state finite but out of range; --pistol does that):
# skipping on would lose every later event, one rebuild each, so learning stalls instead.
CASCADE_AFTER = 2
CASCADE = (
    f"more than {CASCADE_AFTER} events in a row break the model: an earlier one likely left "
    "it fragile; learning stops before this one"
)
UNSEEN_MARK = "a replay did not see the mark it had just written; learning stops before the event"

NOT_RECORDED = "an unlearnable event could not be recorded; learning stops before it"


@dataclass(slots=True)
class Damage:
    """An event that broke the model: VW learned it, so the model must be rebuilt without it."""

    item: LearnItem
    error: UnlearnableEvent


def restore_model(
    decision_log: SQLiteDecisionLog,
    store: ModelStore,
    experiment: str,
    vw_args: str,
    epoch: str,
    update_interval: float,
    *,
    until_seq: int | None = None,
    damage: Damage | None = None,
    pace: Callable[[], None] | None = None,
) -> ExperimentModel:
    """The newest usable checkpoint, then every learned row after it (before `until_seq`), in
    learned order, but those unlearnable under `vw_args`; one newly found so (or `damage`, one
    the caller found) is recorded, then skipped, unless it is one too many in a row or cannot
    be recorded (the model then stalls before it; CASCADE, NOT_RECORDED). `pace` runs after each
    replayed event."""
    # A checkpoint past the log's last learned row holds events the log lost (synchronous=NORMAL
    # and a power cut); new events would reuse its seqs. The log is the truth: drop such files.
    store.discard_after(experiment, decision_log.max_learned_seq(experiment))
    marked: set[int] = set()
    stall_reason = stalled_event_id = ""
    while True:
        if damage is not None:
            item = damage.item
            stalled_event_id = item.event_id  # if it comes to a stall
            if item.seq in marked:
                until_seq, stall_reason = item.seq, UNSEEN_MARK
            elif decision_log.follows_broken_rows(experiment, vw_args, item.seq, CASCADE_AFTER):
                until_seq, stall_reason = item.seq, CASCADE
            else:
                try:
                    mark_unlearnable(decision_log, experiment, vw_args, item, damage.error)
                    marked.add(item.seq)
                except Exception:  # the server must still start: serve what came before it
                    log.exception("unlearnable_event_not_recorded", experiment=experiment)
                    until_seq, stall_reason = item.seq, NOT_RECORDED
        model, checkpoint_seq, replayed, damage = _replay(
            decision_log, store, experiment, vw_args, epoch, update_interval, until_seq, pace
        )
        if damage is None:
            break
    if stall_reason and not model.stalled:  # the replay may have stopped earlier, for its own
        model.stall(stall_reason, stalled_event_id)
        log.error("learning_stalled", experiment=experiment, reason=stall_reason)
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
    until_seq: int | None,
    pace: Callable[[], None] | None,
) -> tuple[ExperimentModel, int | None, int, Damage | None]:
    """(model, checkpoint seq, events replayed, the event that broke the model if one did: the
    model is then unusable and the replay must start over)."""
    policy, checkpoint = _checkpoint(store, experiment, epoch, vw_args, until_seq)
    seq = count = 0
    if checkpoint is not None:
        seq, count = checkpoint.learned_seq, checkpoint.learned_count
    skipped = decision_log.skipped_count(experiment)
    model = ExperimentModel(vw_args, epoch, update_interval, policy, seq, count, skipped)
    replayed = 0
    damage = None
    items = decision_log.learn_items(experiment, vw_args, seq)
    try:
        for item in items:
            if until_seq is not None and item.seq >= until_seq:
                break
            if pace is not None:
                pace()
            try:
                replayed += model.learn(item)
            except UnlearnableEvent as exc:
                if exc.damaged:
                    damage = Damage(item, exc)
                    break
                try:
                    mark_unlearnable(decision_log, experiment, vw_args, item, exc)
                except Exception:  # VW never saw it: the model is fine up to here
                    model.stall(NOT_RECORDED, item.event_id)
                    log.exception("learning_stalled", experiment=experiment, reason=NOT_RECORDED)
                    break
                model.skip(item.seq)
            except Exception as error:
                # As the learner does: stop at the event VW rejects rather than skip it, and
                # serve what was learned before it; the server must still start.
                model.stall(f"VW could not learn it: {describe(error)}", item.event_id)
                log.exception("learning_stalled", experiment=experiment, event_id=item.event_id)
                break
    finally:
        items.close()
    return model, seq if checkpoint is not None else None, replayed, damage


def _checkpoint(
    store: ModelStore, experiment: str, epoch: str, vw_args: str, until_seq: int | None
) -> tuple[VWPolicy | None, Checkpoint | None]:
    """The newest checkpoint to replay from, loaded; (None, None): replay the whole log."""
    if not resumable(vw_args):  # VW cannot resume these exactly
        return None, None
    dropped: set[int] = set()
    while True:
        checkpoint = store.latest(experiment, epoch)
        if checkpoint is None or checkpoint.vw_args != vw_args:
            return None, None
        if checkpoint.learned_seq in dropped:  # it could not be removed: use the log alone
            return None, None
        if until_seq is not None and checkpoint.learned_seq >= until_seq:
            return None, None  # it may include what must stay out; the log has everything
        try:
            return VWPolicy.load(vw_args, checkpoint.model), checkpoint
        except Exception as error:
            # A file damaged on disk: the log holds everything it held, so drop it and try
            # an older one (before, the server would not start).
            log.warning(
                "checkpoint_unreadable",
                experiment=experiment,
                learned_seq=checkpoint.learned_seq,
                error=repr(error),
            )
            dropped.add(checkpoint.learned_seq)
            with contextlib.suppress(OSError):  # then the check above stops trying checkpoints
                store.discard(experiment, checkpoint.learned_seq)


def mark_unlearnable(
    decision_log: SQLiteDecisionLog,
    experiment: str,
    vw_args: str,
    item: LearnItem,
    error: UnlearnableEvent,
) -> None:
    """Record, before anything could checkpoint past it, that the model skips `item`."""
    decision_log.mark_unlearnable(
        experiment, vw_args, item.seq, item.event_id, error.reason, error.damaged, time.time()
    )
    log.warning(
        "event_unlearnable", experiment=experiment, event_id=item.event_id, reason=error.reason
    )


def open_events(
    decision_log: SQLiteDecisionLog, experiment: str, after: float, up_to: float
) -> list[OpenEvent]:
    """Unlearned events whose window closes in (`after`, `up_to`], with their in-window inputs:
    the windows a restart reopens, or the next ones to keep in memory (see Engine)."""
    events = {
        row.event_id: OpenEvent(row.event_id, row.deadline, row.deferred)
        for row in decision_log.open_decisions(experiment, after, up_to)
    }
    _apply_inputs(events, *decision_log.open_inputs(experiment, after, up_to))
    return list(events.values())


def event_from_log(decision_log: SQLiteDecisionLog, row: DecisionRow) -> OpenEvent:
    """One event's window as the log has it (a window not held in memory)."""
    event = OpenEvent(row.event_id, row.deadline, row.deferred)
    rewards = decision_log.rewards(row.experiment, row.event_id)
    activations = decision_log.activations(row.experiment, row.event_id)
    _apply_inputs(
        {row.event_id: event},
        [(r.event_id, r.value) for r in rewards if not r.late],
        {a.event_id for a in activations if not a.late},
    )
    event.learned = decision_log.is_learned(row.experiment, row.event_id)
    return event


def _apply_inputs(
    events: dict[str, OpenEvent], rewards: list[tuple[str, float]], activated: set[str]
) -> None:
    # Inputs of events not in `events` are left out: open_events reads decisions and inputs in
    # separate statements while Ranks go on committing, so a decision logged in between can
    # come with inputs (the loader holds it through Rank or its input instead).
    for event_id in activated:
        if event_id in events:
            events[event_id].activated = True
    for event_id, value in rewards:
        event = events.get(event_id)
        if event is None:
            continue
        if event.first_reward is None:
            event.first_reward = value
        event.reward_sum += value
        event.reward_count += 1
