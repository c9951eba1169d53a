"""One experiment's model: the training policy the learner updates, and what Rank serves."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from bandit_server.core.dsjson import Label, learning_line, prediction_line
from bandit_server.core.policy import Pmf
from bandit_server.learners.vw import VWPolicy
from bandit_server.storage.records import LearnItem


def model_version(epoch: str, vw_args: str, learned_count: int) -> str:
    """Opaque, and different for every distinct served model of an experiment."""
    args_hash = hashlib.blake2b(vw_args.encode(), digest_size=3).hexdigest()
    return f"{epoch}-{args_hash}-{learned_count}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    policy: VWPolicy
    version: str
    learned_count: int


class ExperimentModel:
    """Thread contract: `learn`, `publish` and `serialize` run on the learner thread; `predict`
    on the event loop. With interval 0 both touch the training policy, under `_lock`; otherwise
    Rank reads the published snapshot, which only the event loop uses once published.
    """

    def __init__(
        self,
        vw_args: str,
        epoch: str,
        update_interval: float,
        policy: VWPolicy | None = None,
        learned_seq: int = 0,
        learned_count: int = 0,
    ) -> None:
        self.vw_args = vw_args
        self.epoch = epoch
        self.update_interval = update_interval
        self._policy = policy if policy is not None else VWPolicy(vw_args)
        self._lock = threading.Lock()
        self.learned_seq = learned_seq
        self.learned_count = learned_count
        self.last_publish = 0.0
        self.checkpointed_seq = learned_seq
        self.deleted = False
        self.stalled = False  # set by the learner when an event fails to learn
        self._snapshot = self._make_snapshot()

    def _make_snapshot(self) -> Snapshot:
        data = self._policy.serialize()
        self.last_publish = time.monotonic()
        return Snapshot(
            VWPolicy.load(self.vw_args, data),
            model_version(self.epoch, self.vw_args, self.learned_count),
            self.learned_count,
        )

    @property
    def version(self) -> str:
        if self.update_interval > 0:
            return self._snapshot.version
        return model_version(self.epoch, self.vw_args, self.learned_count)

    def predict(self, c_json: str) -> tuple[Pmf, str]:
        line = prediction_line(c_json)
        if self.update_interval > 0:
            snapshot = self._snapshot
            return snapshot.policy.predict_one(line), snapshot.version
        with self._lock:
            return self._policy.predict_one(line), model_version(
                self.epoch, self.vw_args, self.learned_count
            )

    def learn(self, item: LearnItem) -> bool:
        """Learn one event unless this model already includes it (replay overlaps the queue)."""
        if item.seq <= self.learned_seq:
            return False
        line = learning_line(item.c_json, Label(item.chosen_index, item.probability, item.cost))
        with self._lock:
            self._policy.learn_one(line)
            self.learned_seq = item.seq
            self.learned_count += 1
        return True

    def publish_due(self, now: float) -> bool:
        return (
            self.update_interval > 0
            and self._snapshot.learned_count != self.learned_count
            and now - self.last_publish >= self.update_interval
        )

    def publish(self) -> None:
        """Swap in a fresh snapshot; Rank picks it up on its next call without waiting."""
        with self._lock:
            self._snapshot = self._make_snapshot()

    def serialize(self) -> tuple[bytes, int, int]:
        """(model bytes, learned_seq, learned_count), consistent with each other."""
        with self._lock:
            return self._policy.serialize(), self.learned_seq, self.learned_count
