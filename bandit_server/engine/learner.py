"""The learner thread: learns committed events in log order, publishes snapshots, checkpoints.

Learning happens off the event loop so Rank never waits on it. The writer thread hands over
learned rows in commit order, which is the learned log's order, so the model is always the
log's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from bandit_server.engine.model import ExperimentModel, UnlearnableEvent
from bandit_server.engine.recovery import Damage, mark_unlearnable, restore_model
from bandit_server.storage.models import Checkpoint, ModelStore
from bandit_server.storage.records import LearnedRow, LearnItem
from bandit_server.storage.sqlite_log import SQLiteDecisionLog

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.05
WAL_CHECKPOINT_SECONDS = 1.0


@dataclass(slots=True)
class _Call:
    """Run `fn` on the learner thread, between learned events."""

    fn: Callable[[], object]
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None


_STOP = object()
MAX_BATCH = 256


def _groups(items: list[object]) -> list[tuple[bool, list[object]]]:
    """Consecutive runs of learned rows vs. other jobs, keeping their order."""
    groups: list[tuple[bool, list[object]]] = []
    for item in items:
        is_row = isinstance(item, tuple)
        if groups and groups[-1][0] == is_row:
            groups[-1][1].append(item)
        else:
            groups.append((is_row, [item]))
    return groups


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Learner:
    def __init__(
        self,
        decision_log: SQLiteDecisionLog,
        store: ModelStore,
        models: Callable[[], dict[str, ExperimentModel]],
        checkpoint_interval: float,
    ) -> None:
        self._log = decision_log
        self._store = store
        self._models = models
        self._checkpoint_interval = checkpoint_interval
        self._queue: queue.SimpleQueue[tuple[str, LearnedRow] | _Call | object]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="learner", daemon=True)
        self._last_checkpoint = time.monotonic()
        self._last_wal_checkpoint = time.monotonic()
        self._waiters: dict[tuple[str, int], list[_Waiter]] = {}
        # Highest learned-log seq handled per experiment, whichever model object handled it:
        # waiters check this, so a model replaced by a rebuild cannot strand them.
        self._processed: dict[str, int] = {}
        self._waiters_lock = threading.Lock()
        self.backlog_max = 0

    def start(self) -> None:
        self._thread.start()

    def enqueue(self, experiment: str, row: LearnedRow) -> None:
        """Called by the writer thread, in commit order."""
        self._queue.put((experiment, row))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def call(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the learner thread and wait for it (for rebuilds and checkpoints)."""
        job = _Call(fn)
        self._queue.put(job)
        while not job.done.wait(1.0):
            if not self._thread.is_alive():  # stopped before reaching it: never will
                raise RuntimeError("the learner has stopped")
        if job.error is not None:
            raise job.error
        return job.result

    async def wait_learned(self, experiment: str, model: ExperimentModel, seq: int) -> None:
        """Return once the learner has handled the learned-log row `seq` of `experiment`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            if (
                model.learned_seq >= seq
                or model.deleted
                or self._processed.get(experiment, 0) >= seq
            ):
                return
            self._waiters.setdefault((experiment, seq), []).append((loop, future))
        await future

    def forget(self, experiment: str, store: ModelStore) -> None:
        """After an experiment is deleted (on this thread, between learned events): its
        checkpoints and its progress go."""
        store.delete(experiment)
        with self._waiters_lock:
            self._processed.pop(experiment, None)

    def stop(self) -> None:
        """Learn everything queued, checkpoint every model, then stop."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=TICK_SECONDS)
            except queue.Empty:
                first = None
            items = [] if first is None else [first]
            while items and len(items) < MAX_BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())
            stop = False
            for is_row, group in _groups(items):
                if is_row:
                    self._learn_rows(group)  # type: ignore[arg-type]
                    continue
                for item in group:
                    if item is _STOP:
                        stop = True
                    else:
                        self._run_call(item)  # type: ignore[arg-type]
            if stop:
                self._drain()
                self._guarded(self.checkpoint_all)
                return
            self.backlog_max = max(self.backlog_max, self._queue.qsize())
            self._guarded(self._maintain)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # the learner must outlive a failed checkpoint; the log keeps all
            log.exception("learner_maintenance_failed")

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Call):
                self._run_call(item)
            elif isinstance(item, tuple):
                self._learn_rows([item])

    def _run_call(self, call: _Call) -> None:
        try:
            call.result = call.fn()
        except BaseException as exc:
            call.error = exc
        call.done.set()

    def _learn_rows(self, items: list[tuple[str, LearnedRow]]) -> None:
        """Learn rows in queue order, reading their decisions with one query per experiment."""
        by_experiment: dict[str, list[LearnedRow]] = {}
        for experiment, row in items:
            by_experiment.setdefault(experiment, []).append(row)
        for experiment, rows in by_experiment.items():
            # Look the model up now, not at enqueue time: a rebuild may have replaced it since.
            model = self._models().get(experiment)
            try:
                if model is not None and not model.deleted and not model.stalled:
                    todo = [row for row in rows if row.seq > model.learned_seq]
                    if todo:
                        for item in self._log.learn_batch(experiment, todo):
                            try:
                                model.learn(item)
                            except UnlearnableEvent as exc:
                                self._skip(experiment, model, item, exc)
                                if model.stalled:
                                    break
            except Exception:
                if model is not None and not model.deleted:
                    # Learning on would skip this event for good (a checkpoint would cover it).
                    # Stop here instead; a restart replays from the last learned row.
                    model.stalled = True
                    log.exception("learning_stalled", experiment=experiment)
            finally:
                with self._waiters_lock:
                    done = self._processed.get(experiment, 0)
                    self._processed[experiment] = max(done, rows[-1].seq)
                for row in rows:
                    self._wake(experiment, row.seq)

    def _skip(
        self, experiment: str, model: ExperimentModel, item: LearnItem, error: UnlearnableEvent
    ) -> None:
        """Go on without `item`, recorded first so a restart and the export skip it too. A model
        it broke is rebuilt from the log without it (rare: only on such events), or, when it is
        one too many in a row or cannot be recorded, to just before it, stalled (see
        recovery.restore_model, which decides this for the replay at start too)."""
        if not error.damaged:
            mark_unlearnable(self._log, experiment, model.vw_args, item, error)
            model.skip(item.seq)
            return
        model.restore_from(
            restore_model(
                self._log,
                self._store,
                experiment,
                model.vw_args,
                model.epoch,
                model.update_interval,
                damage=Damage(item, error),
            )
        )
        if not model.stalled:
            model.skip(item.seq)

    def _wake(self, experiment: str, seq: int) -> None:
        with self._waiters_lock:
            waiters = self._waiters.pop((experiment, seq), None)
        for loop, future in waiters or ():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

    def _maintain(self) -> None:
        now = time.monotonic()
        models = self._models()
        for model in models.values():
            if model.publish_due(now):
                model.publish()
        if now - self._last_wal_checkpoint >= WAL_CHECKPOINT_SECONDS:
            self._last_wal_checkpoint = now
            self._log.checkpoint_wal()
        if now - self._last_checkpoint >= self._checkpoint_interval:
            self._last_checkpoint = now
            self.checkpoint_all()

    def checkpoint_all(self) -> None:
        for name, model in self._models().items():
            # A stalled model may have failed halfway through an event: never save it.
            if model.deleted or model.stalled or model.checkpointed_seq == model.learned_seq:
                continue
            data, seq, count = model.serialize()
            self._store.save(
                Checkpoint(name, model.vw_args, seq, count, time.time(), data, model.epoch)
            )
            model.checkpointed_seq = seq
            log.info("checkpoint_saved", experiment=name, learned_seq=seq, learned_count=count)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
