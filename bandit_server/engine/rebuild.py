"""Model rebuilds off the learner thread: a replay of the log, paced, on a thread of its own."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from bandit_server.engine.model import ExperimentModel
from bandit_server.engine.recovery import Damage
from bandit_server.storage.records import LearnedRow


class Abandoned(Exception):
    """The rebuild's result is no longer wanted (its experiment was deleted or retrained, or
    the server is stopping)."""


class Pacer:
    """Rests a thread that holds the GIL for long (VW holds it while learning) for `rest`
    seconds after each `work` seconds, so the other threads get it without waiting out the
    interpreter's switch interval each time they want it back. Raises Abandoned once any of
    `abandoned` is set."""

    def __init__(
        self,
        work: float = 0.005,
        rest: float = 0.001,
        abandoned: tuple[threading.Event, ...] = (),
    ) -> None:
        self._work = work
        self._rest = rest
        self.abandoned = abandoned
        self._until = time.monotonic() + work

    def restart(self) -> None:
        """Count `work` from now (time spent idle is not work)."""
        self._until = time.monotonic() + self._work

    def __call__(self) -> None:
        if any(event.is_set() for event in self.abandoned):
            raise Abandoned
        now = time.monotonic()
        if now >= self._until:
            time.sleep(self._rest)
            self._until = time.monotonic() + self._work


@dataclass(slots=True)
class HeldRows:
    """All of an experiment's learned rows with after_seq < seq <= up_to_seq, in learned order.
    They are read back from the log a batch at a time when learned, not kept: a rebuild or a
    retrain can last many minutes, and holding every row that arrives meanwhile took ~200
    bytes a row (at 1,000 events a second, ~700 MB an hour)."""

    after_seq: int
    up_to_seq: int

    @classmethod
    def of(cls, rows: list[LearnedRow]) -> HeldRows:
        """`rows`: consecutive rows of one experiment (no row of it between them missing)."""
        if not rows:
            return cls(0, 0)
        return cls(rows[0].seq - 1, rows[-1].seq)

    def __bool__(self) -> bool:
        return self.up_to_seq > self.after_seq

    def extend(self, more: HeldRows) -> None:
        """Hold, too, `more`: the experiment's rows right after these."""
        if not more:
            return
        if not self:
            self.after_seq = more.after_seq
        self.up_to_seq = max(self.up_to_seq, more.up_to_seq)


@dataclass(slots=True, eq=False)
class Rebuild:
    """A model being rebuilt without an event (`damage`) that broke it. `held`: the
    experiment's rows from that event on, in learned order; once the rebuilt model is in place
    (`draining`), they are learned a batch at a time between other work, and rows arriving
    meanwhile queue behind. A model that replaced another (a vw_args retrain) catches up the
    same way: a record that is draining from the start, with no damage."""

    held: HeldRows
    model: ExperimentModel | None = None
    damage: Damage | None = None
    result: Future[ExperimentModel] | None = None
    draining: bool = False
    abandoned: threading.Event = field(default_factory=threading.Event)

    def abandon(self) -> None:
        self.abandoned.set()
        if self.result is not None:
            self.result.cancel()
