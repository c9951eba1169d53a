"""The learner thread: learns committed events in log order, publishes snapshots, checkpoints.

Learning happens off the event loop so Rank never waits on it. The writer thread hands over
learned rows in commit order, which is the learned log's order, so the model is always the
log's prefix. A model broken by an event is rebuilt on a thread of its own, so one experiment's
rebuild does not hold up the others; that experiment's later rows wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from bandit_server.engine.model import (
    MAX_PUBLISH_SHARE,
    ExperimentModel,
    UnlearnableEvent,
    least_recent_cost,
    with_cost,
)
from bandit_server.engine.rebuild import Abandoned, HeldRows, Pacer, Rebuild
from bandit_server.engine.recovery import Damage, mark_unlearnable, restore_model
from bandit_server.errors import describe
from bandit_server.storage.models import Checkpoint, ModelStore
from bandit_server.storage.records import LearnedRow
from bandit_server.storage.sqlite_log import SQLiteDecisionLog

log = structlog.get_logger(__name__)
# How far past the interval snapshots must be spaced before it is logged (see _log_spacing).
STRETCH_LOG_MARGIN = 1.25

TICK_SECONDS = 0.05
WAL_CHECKPOINT_SECONDS = 1.0
# VW holds the GIL while it learns. Rows arrive in bursts (each window-closing tick's), and a
# Rank that arrives meanwhile waited for the GIL at each step of its way through gRPC and the
# handler, up to the interpreter's switch interval each time: 95% of the Ranks slower than
# 2 ms at 1 in flight overlapped such a burst. Resting after each slice of learning lets them
# take it (measured: the client's p99 0.5-1.2 ms lower, same throughput). A 50 us sleep lasts
# ~110 us here, so resting slows the learner by a third: it rests only while it keeps up (not
# with a backlog of a batch or more), not at interval 0 (a Reward waits for its event to be
# learned), not while stopping. Nor while more than a couple of Ranks wait for their commit
# (checked each slice): then the event loop has work queued whenever the learner holds the
# GIL, and the switch interval already shares it; resting only adds GIL handoffs and context
# switches (measured at 32 in flight: the learner's CPU a request 20-50% higher, for no gain
# in Rank's throughput).
LEARN_SLICE_SECONDS = 0.0002
LEARN_REST_SECONDS = 0.00005
REST_MAX_RANKS_IN_FLIGHT = 2


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
        ranks_in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self._log = decision_log
        self._ranks_in_flight = ranks_in_flight
        self._store = store
        self._models = models
        self._checkpoint_interval = checkpoint_interval
        self._queue: queue.SimpleQueue[tuple[str, LearnedRow] | _Call | object]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="learner", daemon=True)
        self._last_checkpoint = time.monotonic()
        self._checkpoint_times: tuple[float, ...] = ()  # what the last passes cost (_maintain)
        self._last_wal_checkpoint = time.monotonic()
        self._waiters: dict[tuple[str, int], list[_Waiter]] = {}
        # Highest learned-log seq handled per experiment, whichever model object handled it:
        # waiters check this, so a model replaced by a rebuild cannot strand them.
        self._processed: dict[str, int] = {}
        self._waiters_lock = threading.Lock()
        self._pace = Pacer(work=LEARN_SLICE_SECONDS, rest=LEARN_REST_SECONDS)
        self._stopping = False
        # A rebuild replays the log (~80 us an event; the whole log for models VW cannot
        # resume): on its own thread, so other experiments keep learning meanwhile.
        self._rebuilds: dict[str, Rebuild] = {}
        self._rebuilder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-rebuild")
        self.backlog_max = 0

    def start(self) -> None:
        self._thread.start()

    def enqueue(self, experiment: str, row: LearnedRow) -> None:
        """Called as rows commit, in commit order (on the writer thread, or on the event loop
        for a commit it ran itself)."""
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

    def build(
        self, replay: Callable[[Pacer], ExperimentModel], abandoned: tuple[threading.Event, ...]
    ) -> Future[ExperimentModel]:
        """Run `replay` (a model built from the log) on the rebuild thread, paced, so learning
        goes on meanwhile; `catch_up` the result once it is in place. Setting any of
        `abandoned` stops it (rebuild.Abandoned)."""
        return self._rebuilder.submit(replay, Pacer(abandoned=abandoned))

    def rebuilding(self, experiment: str) -> bool:
        """On this thread: whether the experiment's model is being rebuilt after an event that
        broke it (its held rows may still be learning: that is done)."""
        rebuild = self._rebuilds.get(experiment)
        return rebuild is not None and not rebuild.draining

    def catch_up_rows(self, experiment: str, model: ExperimentModel) -> HeldRows:
        """On this thread: the rows it handled (with the experiment's current model) after
        `model`'s replay read the log, which `model` must learn if it takes over. Reads the
        first of them, so that a log it cannot read fails the retrain before anything changes
        (a later failure stalls the model, as for any batch)."""
        handled = self._processed.get(experiment, 0)
        rows = HeldRows(model.learned_seq, max(model.learned_seq, handled))
        if rows:
            self._log.learned_rows(experiment, rows.after_seq, rows.up_to_seq, 1)
        return rows

    def catch_up(self, experiment: str, rows: HeldRows) -> None:
        """On this thread, right after a model from `build` replaced the experiment's model:
        learn `rows` (catch_up_rows), then what a rebuild of the replaced model held (it is
        no longer wanted), a batch per pass like any held rows; new rows queue behind."""
        rebuild = self._rebuilds.pop(experiment, None)
        if rebuild is not None:
            rebuild.abandon()
            rows.extend(rebuild.held)
        if rows:
            self._rebuilds[experiment] = Rebuild(rows, draining=True)

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
        rebuild = self._rebuilds.pop(experiment, None)
        if rebuild is not None:
            rebuild.abandon()
        # Its rows are gone: nothing left to learn. All of its waiters, not only those of the
        # rows a rebuild holds: a held batch read after the delete finds no rows, and hands
        # none of them on. (A new experiment of the name waits for this: see Engine._deleting.)
        self._wake_waiting(experiment)

    def stop(self) -> None:
        """Learn everything queued, checkpoint every model, then stop."""
        self._queue.put(_STOP)
        self._thread.join()
        self._rebuilder.shutdown(wait=True)

    def _run(self) -> None:
        while True:
            try:
                if any(rebuild.draining for rebuild in self._rebuilds.values()):
                    first = self._queue.get_nowait()
                else:
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
                self._stopping = True
                self._drain()
                # A rebuild still running stops rather than hold up the shutdown: its model
                # is never checkpointed, and a restart redoes it from the log.
                for rebuild in self._rebuilds.values():
                    if not rebuild.draining:
                        # Not abandon(): a cancelled one would reach _install as a failure.
                        rebuild.abandoned.set()
                while self._rebuilds:  # end them, and what they hold, before checkpointing
                    for experiment, rebuild in list(self._rebuilds.items()):
                        if not rebuild.draining:
                            self._install(experiment, rebuild)
                    self._learn_held(everything=True)
                    self._drain()
                self._guarded(self.checkpoint_all)
                return
            self._learn_held(everything=False)
            self.backlog_max = max(self.backlog_max, self._queue.qsize())
            self._guarded(self._maintain)

    def _guarded(self, fn: Callable[[], object]) -> None:
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

    def _learn_rows(self, rows: list[tuple[str, LearnedRow]]) -> None:
        """Learn rows in queue order, reading their decisions with one query per experiment;
        an experiment's rows wait while its model is rebuilt."""
        by_experiment: dict[str, list[LearnedRow]] = {}
        for experiment, row in rows:
            by_experiment.setdefault(experiment, []).append(row)
        for experiment, mine in by_experiment.items():
            rebuild = self._rebuilds.get(experiment)
            if rebuild is not None:
                rebuild.held.extend(HeldRows.of(mine))  # the queue's order is the learned order
            else:
                self._learn_now(experiment, mine)

    def _learn_now(self, experiment: str, rows: list[LearnedRow]) -> None:
        handled = self._learn_experiment(experiment, rows)
        if handled:
            self._mark_handled(experiment, handled[-1].seq)
            for row in handled:
                self._wake(experiment, row.seq)

    def _mark_handled(self, experiment: str, seq: int) -> None:
        with self._waiters_lock:
            self._processed[experiment] = max(self._processed.get(experiment, 0), seq)

    def _learn_held(self, everything: bool) -> None:
        """Learn the rows rebuilt models held, a batch per experiment a pass (or all of them):
        a long rebuild holds many, and learning them in one go would hold up the other
        experiments again."""
        for experiment, rebuild in list(self._rebuilds.items()):
            if not rebuild.draining:
                continue
            self._learn_held_batch(experiment, rebuild)
            while everything and self._rebuilds.get(experiment) is rebuild:
                self._learn_held_batch(experiment, rebuild)

    def _learn_held_batch(self, experiment: str, rebuild: Rebuild) -> None:
        held = rebuild.held
        try:
            chunk = self._log.learned_rows(experiment, held.after_seq, held.up_to_seq, MAX_BATCH)
        except Exception as error:
            # As when reading a batch to learn fails (see _learn_experiment): stop here, and
            # let go of those waiting; a restart replays from the last learned row.
            model = self._models().get(experiment)
            if model is not None and not model.deleted:
                model.stall(f"reading events to learn failed: {describe(error)}")
            log.exception("learning_stalled", experiment=experiment)
            chunk = []
            self._mark_handled(experiment, held.up_to_seq)
            self._wake_waiting(experiment, held.up_to_seq)
        held.after_seq = chunk[-1].seq if len(chunk) == MAX_BATCH else held.up_to_seq
        if not held and self._rebuilds.get(experiment) is rebuild:
            del self._rebuilds[experiment]
        # While rows remain the record stays, so new rows queue behind them, and a row that
        # breaks the model again hands them to the next rebuild (see _rebuild).
        if chunk:
            self._learn_now(experiment, chunk)

    def _may_rest(self, model: ExperimentModel) -> bool:
        """Whether this batch may rest between slices (see LEARN_SLICE_SECONDS); each slice
        then also asks `_few_ranks_in_flight`."""
        return model.update_interval > 0 and not self._stopping and self._queue.qsize() < MAX_BATCH

    def _few_ranks_in_flight(self) -> bool:
        return self._ranks_in_flight() <= REST_MAX_RANKS_IN_FLIGHT

    def _learn_experiment(self, experiment: str, rows: list[LearnedRow]) -> list[LearnedRow]:
        """Learn `rows`; returns those handled: all of them, unless one broke the model, which
        is then rebuilt off this thread and holds that row and the ones after it."""
        # Look the model up now, not at enqueue time: a rebuild may have replaced it since.
        model = self._models().get(experiment)
        if model is None or model.deleted or model.stalled:
            return rows
        item = None  # the event being learned, once the batch is read
        try:
            todo = [row for row in rows if row.seq > model.learned_seq]
            if not todo:
                return rows
            # Rows marked unlearnable are left out (a rebuild or a retrain may have marked
            # them after they were queued); the skip after the loop moves past them.
            pace = self._pace if self._may_rest(model) else None
            if pace is not None:
                pace.restart()
            for item in self._log.learn_batch(experiment, todo, model.vw_args):
                try:
                    model.learn(item)
                except UnlearnableEvent as exc:
                    if exc.damaged:
                        held = [row for row in rows if row.seq >= item.seq]
                        self._rebuild(experiment, model, Damage(item, exc), held)
                        return rows[: len(rows) - len(held)]
                    # VW never saw it: record it, so a restart and the export skip it too.
                    mark_unlearnable(self._log, experiment, model.vw_args, item, exc)
                    model.skip(item.seq)
                if pace is not None and self._few_ranks_in_flight():
                    pace()
            model.skip(todo[-1].seq)
        except Exception as error:
            if not model.deleted:
                # Learning on would skip this event for good (a checkpoint would cover it).
                # Stop here instead; a restart replays from the last learned row.
                if item is None:  # reading the batch failed: no event is to blame
                    model.stall(f"reading events to learn failed: {describe(error)}")
                else:
                    model.stall(f"learning it failed: {describe(error)}", item.event_id)
                log.exception("learning_stalled", experiment=experiment)
        return rows

    def _rebuild(
        self, experiment: str, model: ExperimentModel, damage: Damage, held: list[LearnedRow]
    ) -> None:
        """Rebuild `model` from the log without the event that broke it (rare: only on such
        events), or, when it is one too many in a row or cannot be recorded, to just before
        it, stalled (recovery.restore_model decides, as for the replay at start). Meanwhile
        Rank gets UNAVAILABLE with interval 0, or keeps its snapshot."""
        rebuild = Rebuild(HeldRows.of(held), model, damage)
        previous = self._rebuilds.get(experiment)
        if previous is not None:  # a rebuild's held rows broke the model again
            rebuild.held.extend(previous.held)  # the rows after the batch that broke it
        rebuild.result = self._rebuilder.submit(
            restore_model,
            self._log,
            self._store,
            experiment,
            model.vw_args,
            model.epoch,
            model.update_interval,
            damage=damage,
            pace=Pacer(abandoned=(rebuild.abandoned,)),
        )
        self._rebuilds[experiment] = rebuild
        rebuild.result.add_done_callback(
            lambda _: self._queue.put(_Call(lambda: self._install(experiment, rebuild)))
        )

    def _install(self, experiment: str, rebuild: Rebuild) -> None:
        """Put a finished rebuild's model in place; its held rows are learned next."""
        if self._rebuilds.get(experiment) is not rebuild or rebuild.draining:
            return  # installed at stop, or no longer wanted
        model, damage = rebuild.model, rebuild.damage
        assert model is not None and damage is not None and rebuild.result is not None
        try:
            rebuilt = rebuild.result.result()
        except Abandoned:  # at stop: learn nothing more on the broken model
            model.stall("the server stopped while the model was being rebuilt")
            log.info("rebuild_stopped", experiment=experiment)
        except Exception as error:
            # It stays damaged: with interval 0 Rank gets UNAVAILABLE until a restart.
            model.stall(f"rebuilding the model failed: {describe(error)}")
            log.exception("learning_stalled", experiment=experiment, reason="rebuild failed")
        else:
            if not model.deleted and self._models().get(experiment) is model:
                model.restore_from(rebuilt)
                if not model.stalled:
                    model.skip(damage.item.seq)
        rebuild.draining = True

    def _wake_waiting(self, experiment: str, up_to_seq: float = math.inf) -> None:
        """Let go of all those waiting for the experiment's rows up to `up_to_seq` (those of
        rows before the ones held were let go as their rows were handled)."""
        with self._waiters_lock:
            seqs = [seq for name, seq in self._waiters if name == experiment and seq <= up_to_seq]
        for seq in seqs:
            self._wake(experiment, seq)

    def _wake(self, experiment: str, seq: int) -> None:
        with self._waiters_lock:
            waiters = self._waiters.pop((experiment, seq), None)
        for loop, future in waiters or ():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

    def _maintain(self) -> None:
        now = time.monotonic()
        models = self._models()
        for name, model in models.items():
            if model.publish_due(now):
                model.publish()
                self._log_spacing(name, model)
        if now - self._last_wal_checkpoint >= WAL_CHECKPOINT_SECONDS:
            self._last_wal_checkpoint = now
            self._log.checkpoint_wal()
        # Serializing holds the GIL, as for snapshots: spaced to take at most the same share of
        # the time (the log keeps everything; a restart replays more of it).
        cost = least_recent_cost(self._checkpoint_times)
        if now - self._last_checkpoint >= max(self._checkpoint_interval, cost / MAX_PUBLISH_SHARE):
            self._last_checkpoint = now
            self._checkpoint_times = with_cost(self._checkpoint_times, self.checkpoint_all())

    def _log_spacing(self, name: str, model: ExperimentModel) -> None:
        """Say when snapshots start or stop being spaced past the interval; a margin keeps a
        cost near the line from flipping it back and forth."""
        spacing, interval = model.publish_spacing, model.update_interval
        if not model.publish_stretched and spacing > STRETCH_LOG_MARGIN * interval:
            model.publish_stretched = True
            event = "snapshot_interval_stretched"
        elif model.publish_stretched and spacing <= interval:
            model.publish_stretched = False
            event = "snapshot_interval_kept"
        else:
            return
        log.warning(
            event,
            experiment=name,
            interval=interval,
            spacing=round(spacing, 3),
            publish_seconds=round(model.publish_seconds, 4),
        )

    def checkpoint_all(self) -> float:
        """Checkpoint every model that learned since its last one; returns the CPU time spent
        serializing (what held the GIL)."""
        cost = 0.0
        for name, model in self._models().items():
            # A stalled model may have failed halfway through an event, a damaged one learned
            # an event that broke it, an outdated one events now marked: never save them.
            if (
                model.deleted
                or model.stalled
                or model.damaged
                or model.outdated
                or model.checkpointed_seq == model.learned_seq
            ):
                continue
            data, seq, count = model.serialize()
            cost += model.serialize_seconds
            self._store.save(
                Checkpoint(name, model.vw_args, seq, count, time.time(), data, model.epoch)
            )
            model.checkpointed_seq = seq
            log.info("checkpoint_saved", experiment=name, learned_seq=seq, learned_count=count)
        return cost


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
