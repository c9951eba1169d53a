"""One experiment's model: the training policy the learner updates, and what Rank serves."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from dataclasses import dataclass

from bandit_server.core.dsjson import Label, learning_line, prediction_line
from bandit_server.core.policy import Pmf
from bandit_server.core.types import MAX_NUMBER
from bandit_server.errors import Unavailable
from bandit_server.learners.vw import VWPolicy, number_bound
from bandit_server.storage.records import LearnItem


def model_version(epoch: str, vw_args: str, learned_count: int, skipped: int = 0) -> str:
    """Opaque, and different for every distinct served model of an experiment. `skipped`
    (events skipped on request): a rebuild that skips events learned before others comes back
    to a count an earlier, different model had."""
    args_hash = hashlib.blake2b(vw_args.encode(), digest_size=3).hexdigest()
    suffix = f"-s{skipped}" if skipped else ""
    return f"{epoch}-{args_hash}-{learned_count}{suffix}"


class UnlearnableEvent(ValueError):
    """An event this model must not learn from. `damaged`: VW already learned it and the model
    must be restored to before it (see `ExperimentModel.learn`)."""

    def __init__(self, reason: str, damaged: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.damaged = damaged


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")


def check_learned_numbers(event_id: str, c_json: str, bound: float, vw_args: str) -> None:
    """Raise UnlearnableEvent if the example holds a number past `bound` in magnitude."""
    digits = len(str(int(bound)))
    # Cheap first: JSON writes such a number with an exponent or with that many digits (ASCII
    # ones); a string feature can also match, so the parse below decides. Mapping every digit
    # to 0 and searching for a run of zeros is ~8x faster than a regex (it runs every event).
    digit_runs = c_json.encode(errors="surrogatepass").translate(_DIGITS_TO_ZERO)
    if "e+" not in c_json and b"0" * digits not in digit_runs:
        return
    document = json.loads(c_json)
    objects = [document, *document.get("_multi", ())]
    for namespaces in objects:
        for name, features in namespaces.items():
            if name == "_multi" or not isinstance(features, dict):
                continue
            for value in features.values():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if number and abs(value) > bound:
                    raise UnlearnableEvent(
                        f"event {event_id!r} has the number {value!r}, past {bound:g} in "
                        f"magnitude, which VW cannot learn from safely under {vw_args!r} "
                        "(interacted values are multiplied in 32-bit floats)",
                        damaged=False,
                    )


def _usable(pmf: Pmf) -> bool:
    """What Rank can draw from (core/sampling.py): finite probabilities with some mass.
    --ftrl --regcb can be left predicting all zeros."""
    return all(math.isfinite(p) for _, p in pmf) and sum(p for _, p in pmf) > 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    policy: VWPolicy
    version: str


# Publishing a snapshot holds the GIL throughout, so every call waits meanwhile: VW serializes
# the weights, then builds a workspace from them (~7 ms at -b 18, ~0.16 s at -b 24, measured).
# Snapshots are spaced so that publishing takes at most this share of the time, however short
# the interval: a refresh every second that stalls the server for 0.16 s would serve no one.
MAX_PUBLISH_SHARE = 0.02
# Costs are counted in this thread's CPU time: what VW spends holding the GIL, not the time the
# thread waits for it while the event loop is busy. Tests replace it.
_cpu = time.thread_time


def with_cost(times: tuple[float, ...], cost: float) -> tuple[float, ...]:
    """The last three costs, `cost` the newest (a tuple, replaced whole: read from any thread)."""
    return (*times[-2:], cost)


def least_recent_cost(times: tuple[float, ...]) -> float:
    """The least of the last three costs: one that a busy machine slowed does not count."""
    return min(times, default=0.0)


class ExperimentModel:
    """Thread contract: `learn`, `publish` and `serialize` run on the learner thread (or, for a
    model being built, on the rebuild thread that builds it); `predict` on the event loop. With
    interval 0 both touch the training policy, under `_lock`; otherwise Rank reads the
    published snapshot, which only the event loop uses once published.
    """

    def __init__(
        self,
        vw_args: str,
        epoch: str,
        update_interval: float,
        policy: VWPolicy | None = None,
        learned_seq: int = 0,
        learned_count: int = 0,
        skipped: int = 0,
    ) -> None:
        self.vw_args = vw_args
        self.skipped = skipped  # events skipped on request when it was built (see model_version)
        self.epoch = epoch
        self.update_interval = update_interval
        self._policy = policy if policy is not None else VWPolicy(vw_args)
        self._number_bound = number_bound(vw_args)
        self._lock = threading.Lock()
        self.learned_seq = learned_seq
        self.learned_count = learned_count
        self.last_publish = 0.0
        # What the last snapshots cost (see with_cost).
        self._publish_times: tuple[float, ...] = ()
        self.serialize_seconds = 0.0  # what the last `serialize` cost
        self.publish_stretched = False  # spaced past the interval (the learner logs changes)
        self.checkpointed_seq = learned_seq
        self.deleted = False
        self.stalled = False  # set (by `stall`) when learning stops short of the log
        self.stall_reason = ""
        self.stalled_event_id = ""  # the event it stopped before, when one caused the stall
        # Set when events it learned were marked unlearnable (Engine.rebuild_model): it serves
        # until its rebuild replaces it, but a checkpoint of it would hold them.
        self.outdated = False
        # Set between learning an event that broke the training policy and its restoration.
        self.damaged = False
        self._pending_interval: float | None = None  # set_update_interval while damaged
        # Not counted: made while starting or restoring, when the machine is at its busiest.
        self._snapshot = self._make_snapshot(counted=False)

    def _make_snapshot(self, counted: bool = True) -> Snapshot:
        start = _cpu()
        policy = VWPolicy.load(self.vw_args, self._policy.serialize())
        if counted:
            self._publish_times = with_cost(self._publish_times, _cpu() - start)
        self.last_publish = time.monotonic()
        return Snapshot(policy, self._live_version())

    @property
    def publish_seconds(self) -> float:
        return least_recent_cost(self._publish_times)

    @property
    def publish_spacing(self) -> float:
        """Seconds between snapshots: the interval, or longer when publishing is slow."""
        return max(self.update_interval, self.publish_seconds / MAX_PUBLISH_SHARE)

    @property
    def version(self) -> str:
        if self.update_interval > 0:
            return self._snapshot.version
        return self._live_version()

    def predict(self, c_json: str) -> tuple[Pmf, str]:
        line = prediction_line(c_json)
        if self.update_interval > 0:
            snapshot = self._snapshot
            return snapshot.policy.predict_one(line), snapshot.version
        with self._lock:
            if self.damaged:
                raise Unavailable(
                    "the model is being restored to before an event it could not learn from; "
                    "retry shortly"
                )
            return self._policy.predict_one(line), self._live_version()

    def learn(self, item: LearnItem) -> bool:
        """Learn one event unless this model already includes it (replay overlaps the queue).

        Raises UnlearnableEvent for an event this model must skip:
        - before VW sees it, when it holds a number past what this model's interactions allow:
          Rank checks new events, but the log can hold older ones made under settings without
          interactions (a vw_args change retrains on them), and VW would never return on some
          (--synthcover);
        - after VW learned it, when the model then predicts non-finite probabilities on it (the
          limits hold each value, not each example: under --ftrl --squarecb one feature of 1e10
          and one reward of 1e15 are enough). The model is `damaged` until the caller restores
          it without the event; Rank on it then gets UNAVAILABLE, never NaN.
        The check predicts on the event it learned: the weights an update can break are that
        example's own, and state every prediction shares shows there too."""
        if item.seq <= self.learned_seq:
            return False
        if self._number_bound < MAX_NUMBER:
            check_learned_numbers(item.event_id, item.c_json, self._number_bound, self.vw_args)
        line = learning_line(item.c_json, Label(item.chosen_index, item.probability, item.cost))
        with self._lock:
            after = self._policy.learn_then_predict_one(line)
            if after is None or not _usable(after):
                self.damaged = True
                said = "non-finite weights" if after is None else f"the prediction {after!r}"
                raise UnlearnableEvent(
                    f"learning event {item.event_id!r} (cost {item.cost!r}) left the model with "
                    f"{said} on it",
                    damaged=True,
                )
            self.learned_seq = item.seq
            self.learned_count += 1
        return True

    def skip(self, seq: int) -> None:
        """Move past learned-log row `seq` without learning it (it was found unlearnable)."""
        with self._lock:
            self.learned_seq = max(self.learned_seq, seq)

    def stall(self, reason: str, event_id: str = "") -> None:
        """Learn nothing more (GetExperiment shows why, and the event that caused it, if one
        did); RebuildModel or a restart replays from the log."""
        self.stall_reason = reason  # first: GetExperiment reads them once `stalled` is set
        self.stalled_event_id = event_id
        self.stalled = True

    def restore_from(self, rebuilt: ExperimentModel) -> None:
        """Take the training state of `rebuilt` (this model's log replayed without the events
        found unlearnable). Rank keeps its snapshot until the next publish."""
        with self._lock:
            self._policy = rebuilt._policy
            self.learned_seq = rebuilt.learned_seq
            self.learned_count = rebuilt.learned_count
            self.skipped = rebuilt.skipped
            self.stalled = rebuilt.stalled
            self.stall_reason = rebuilt.stall_reason
            self.stalled_event_id = rebuilt.stalled_event_id
            self.damaged = False
            if self._pending_interval is not None:
                self._set_update_interval(self._pending_interval)
                self._pending_interval = None

    def set_update_interval(self, interval: float) -> None:
        """Change how often Rank's snapshot is refreshed. A model that served live until now
        publishes first: its snapshot may be as old as the experiment, and Rank must never go
        back to an older model than the one it served. A damaged model cannot publish, so it
        changes once restored (Rank keeps getting what it got meanwhile)."""
        with self._lock:
            if self.damaged:
                self._pending_interval = interval
            else:
                self._set_update_interval(interval)

    def _live_version(self) -> str:
        """The training policy's version, which the snapshot's is compared with: a rebuild that
        skips events can bring the learned count back to the snapshot's with other events."""
        return model_version(self.epoch, self.vw_args, self.learned_count, self.skipped)

    def _set_update_interval(self, interval: float) -> None:
        if interval > 0 and self._snapshot.version != self._live_version():
            self._snapshot = self._make_snapshot()
        self.update_interval = interval

    def publish_due(self, now: float) -> bool:
        return (
            self.update_interval > 0
            and not self.damaged  # never publish a broken model; Rank keeps the last good one
            and self._snapshot.version != self._live_version()
            and now - self.last_publish >= self.publish_spacing
        )

    def publish(self) -> None:
        """Swap in a fresh snapshot; Rank picks it up on its next call without waiting."""
        with self._lock:
            self._snapshot = self._make_snapshot()

    def serialize(self) -> tuple[bytes, int, int]:
        """(model bytes, learned_seq, learned_count), consistent with each other."""
        with self._lock:
            start = _cpu()
            data = self._policy.serialize()
            self.serialize_seconds = _cpu() - start
            return data, self.learned_seq, self.learned_count
