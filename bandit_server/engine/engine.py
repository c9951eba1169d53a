"""The service's async API: experiments, Rank, Reward, Activate. No wire types here.

Thread layout: this class runs on one asyncio loop; the log writer and the learner each own a
thread. A request's log rows are committed (group commit) before its call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import math
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bandit_server.core import joiner, sampling
from bandit_server.core.dsjson import context_json
from bandit_server.core.experiment import ExperimentConfig, check_experiment_name
from bandit_server.core.joiner import OpenEvent
from bandit_server.core.types import (
    MAX_NUMBER,
    MAX_REWARD,
    Action,
    RankInput,
    RankResult,
    check_id,
    check_interacted_numbers,
    check_number,
)
from bandit_server.engine.learner import Learner
from bandit_server.engine.model import ExperimentModel
from bandit_server.engine.rebuild import Abandoned
from bandit_server.engine.recovery import (
    CASCADE_AFTER,
    event_from_log,
    open_events,
    restore_model,
)
from bandit_server.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable, describe
from bandit_server.learners.vw import (
    action_limit,
    interaction_order,
    number_bound,
    validate_args,
)
from bandit_server.storage.models import DirectoryModelStore
from bandit_server.storage.records import (
    ActivationRow,
    DecisionRow,
    DeleteExperimentRow,
    DuplicateDecision,
    ExperimentRow,
    LearnedRow,
    RewardRow,
    WatermarkRow,
)
from bandit_server.storage.sqlite_log import SQLiteDecisionLog
from bandit_server.storage.sqlite_schema import SKIPPED_ON_REQUEST
from bandit_server.storage.sqlite_writer import Row

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Reward windows may last 30 days, and an open window held in memory costs ~370 bytes: a week
# at 1,000 Ranks a second would take ~220 GB, and a restart would load them all again. So only
# windows closing within this horizon are held in memory; the others stay in the log until
# their end nears. An input for one reads its window from the log, holds it while the input
# commits, and gives it back.
HORIZON_SECONDS = 900.0
# How often the windows entering the horizon are read from the log.
LOAD_EVERY_SECONDS = 5.0
WINDOW_TICK_SECONDS = 0.25
# Windows are closed in batches at most this often: under load a deadline passes every few
# microseconds, and waking per deadline cost Rank throughput (a default reward learned 20 ms
# late changes nothing; lateness is judged by the logged deadline, not by this timer).
MIN_WINDOW_TICK_SECONDS = 0.02
WATERMARK_EVERY_SECONDS = 1.0
# How many events one RebuildModel call may skip: each is looked up and marked in one go.
MAX_SKIPPED_EVENTS = 1000


_Settle = tuple[
    "asyncio.Future[list[LearnedRow]]",
    BaseException | None,
    list[LearnedRow],
    Callable[[], None] | None,
    Callable[[], None] | None,
]


@dataclass(frozen=True, slots=True)
class ExperimentStatus:
    config: ExperimentConfig
    model_version: str
    learned_events: int
    learning_stalled: bool = False
    unlearnable_events: int = 0
    stalled_event_id: str = ""
    stall_reason: str = ""


@dataclass(slots=True)
class _Runtime:
    config: ExperimentConfig
    epoch: str
    model: ExperimentModel
    # Every unlearned window closing by then is in `open` (or committing); later ones stay in
    # the log until then (see HORIZON_SECONDS).
    loaded_until: float
    open: dict[str, OpenEvent] = field(default_factory=dict)
    # Ranked events whose decision is committing: opened in `open` only once it settles.
    committing: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    closed_until: float = float("-inf")
    load_failing: bool = False  # the last read of windows entering the horizon failed
    # One update at a time: each compares with and replaces the settings.
    update_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set on delete: a retrain still running stops, so the rebuild thread is free again.
    deleted: threading.Event = field(default_factory=threading.Event)


def result_from_row(row: DecisionRow) -> RankResult:
    ranking = tuple(
        (row.action_ids[index], prob)
        for index, prob in zip(row.ranking, row.probabilities, strict=True)
    )
    return RankResult(row.event_id, ranking, row.model_version)


def _excluded_json(request: RankInput) -> str:
    if not request.excluded_action_ids:
        return "[]"
    excluded = set(request.excluded_action_ids)
    return json.dumps(
        [_action_dict(a) for a in request.actions if a.id in excluded], separators=(",", ":")
    )


def _action_dict(action: Action) -> dict[str, object]:
    return {
        "id": action.id,
        "features": {ns.name: {f.name: f.value for f in ns.features} for ns in action.features},
    }


class Engine:
    def __init__(
        self,
        data_dir: Path,
        *,
        synchronous: str = "FULL",
        checkpoint_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir
        self._synchronous = synchronous
        self._checkpoint_interval = checkpoint_interval
        self._clock = clock
        self._runtimes: dict[str, _Runtime] = {}
        # Replaced, never mutated, so the learner thread always reads a consistent mapping.
        self._models: dict[str, ExperimentModel] = {}
        # The loop and the learner thread both swap the mapping; a policy change also checks it
        # and saves its settings under this lock, so a delete cannot slip in between.
        self._models_lock = threading.RLock()
        self._deadlines: list[tuple[float, str, str]] = []
        self._window_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settles: deque[_Settle] = deque()
        self._validator = ThreadPoolExecutor(1, thread_name_prefix="vw-args-check")
        # Log reads run off the event loop here, not on asyncio's default threads: stop() waits
        # for them before it closes the log (a read whose caller gave up keeps running, and it
        # met a closed connection).
        self._reads = ThreadPoolExecutor(2, thread_name_prefix="log-read")
        # (experiment, event id) -> settles when that event's outcome commit in flight does, or
        # its window's close commit.
        self._busy: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._deleting: set[str] = set()
        self._background: set[asyncio.Future[Any]] = set()
        # deadline -> windows not yet in the heap whose commit is in flight: Ranks' decisions,
        # and windows read from the log for an input (_bring_in). The close watermark stays
        # below them too. A plain dict: Counter's Python-level methods cost ~5% of the event
        # loop's time a Rank.
        self._pending_deadlines: dict[float, int] = {}
        self._stopping = False
        # Ranks waiting for their decision's commit: the learner rests only while few do (see
        # learner.REST_MAX_RANKS_IN_FLIGHT). Read from the learner thread; an int is enough.
        self.ranks_in_flight = 0
        # Set at stop: a vw_args retrain still running stops rather than hold up the shutdown
        # (its update fails; the log is unchanged, so it can be sent again).
        self._stop_retrains = threading.Event()
        self.log: SQLiteDecisionLog
        self.learner: Learner

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the log, restore every experiment's model and windows, start the threads."""
        self._loop = asyncio.get_running_loop()
        loop = self._loop
        # asyncio's queue of callbacks ready to run: empty means no other request is waiting
        # on the loop, so a small commit can run here rather than wake the writer thread and
        # wait to be woken back (see GroupCommitWriter). Other loops: always the writer thread.
        ready = getattr(loop, "_ready", None)
        here = None if ready is None else (lambda: not ready)
        self.log = SQLiteDecisionLog(self.data_dir, self._synchronous, here=here)
        self.log.on_batch_end(lambda: loop.call_soon_threadsafe(self._drain_settles))
        self._store = DirectoryModelStore(self.data_dir / "models")
        self.learner = Learner(
            self.log,
            self._store,
            lambda: self._models,
            self._checkpoint_interval,
            ranks_in_flight=lambda: self.ranks_in_flight,
        )
        for row in self.log.experiments():
            self._install(row)
        self.learner.start()
        self._window_task = asyncio.create_task(self._close_windows_forever())
        log.info("engine_started", data_dir=str(self.data_dir), experiments=len(self._runtimes))

    def _install(self, row: ExperimentRow) -> None:
        self._add_runtime(self._load_runtime(row))

    def _load_runtime(self, row: ExperimentRow) -> _Runtime:
        """An experiment's model and open windows as the log has them (any thread)."""
        config = ExperimentConfig.from_json_dict(json.loads(row.config_json))
        model = self._restore_model(config, row.epoch)
        runtime = _Runtime(config, row.epoch, model, self._clock() + HORIZON_SECONDS)
        runtime.closed_until = self.log.closed_until(config.name)
        for event in open_events(self.log, config.name, runtime.closed_until, runtime.loaded_until):
            runtime.open[event.event_id] = event
        self._set_model(config.name, model)
        return runtime

    def _restore_model(
        self, config: ExperimentConfig, epoch: str, pace: Callable[[], None] | None = None
    ) -> ExperimentModel:
        return restore_model(
            self.log,
            self._store,
            config.name,
            config.vw_args,
            epoch,
            config.model_update_interval_seconds,
            pace=pace,
        )

    def _add_runtime(self, runtime: _Runtime) -> None:
        name = runtime.config.name
        for event in runtime.open.values():
            heapq.heappush(self._deadlines, (event.deadline, name, event.event_id))
        self._runtimes[name] = runtime

    def _set_model(self, name: str, model: ExperimentModel | None) -> None:
        with self._models_lock:
            models = {k: v for k, v in self._models.items() if k != name}
            if model is not None:
                models[name] = model
            self._models = models

    async def stop(self) -> None:
        """Commit what is queued, learn it, checkpoint every model, close the log."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_retrains.set()
        if self._background:  # deletes and policy changes whose callers went away
            await asyncio.wait(self._background)
        if self._window_task is not None:
            self._window_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._window_task
        await asyncio.to_thread(self.log.flush_and_stop_writing)
        await asyncio.to_thread(self.learner.stop)
        self._validator.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._reads.shutdown)
        self.log.close()
        log.info("engine_stopped")

    # -- experiments -----------------------------------------------------------------------

    def _runtime(self, name: str, field_name: str = "experiment") -> _Runtime:
        runtime = self._runtimes.get(name)
        if runtime is None:
            check_experiment_name(name, field_name)
            raise NotFound(f"experiment {name!r} does not exist")
        return runtime

    def _status(self, runtime: _Runtime) -> ExperimentStatus:
        model = runtime.model
        config = runtime.config
        return ExperimentStatus(
            config,
            model.version,
            model.learned_count,
            model.stalled,
            self.log.unlearnable_count(config.name, config.vw_args),
            model.stalled_event_id if model.stalled else "",
            model.stall_reason if model.stalled else "",
        )

    async def create_experiment(self, config: ExperimentConfig) -> ExperimentStatus:
        self._check_name_free(config.name)
        config = await self._validated(config)
        self._check_name_free(config.name)  # again: another create may have finished meanwhile
        now = self._clock()
        epoch = secrets.token_hex(3)
        self.log.execute_admin(
            "INSERT INTO experiments (name, config, epoch, created_at, updated_at)"
            " VALUES (?,?,?,?,?)",
            (config.name, json.dumps(config.to_json_dict()), epoch, now, now),
        )
        # Learned rows up to here belong to other experiments, or to a deleted one of the same
        # name whose rows may still wait in the learner's queue: this model must not learn them.
        floor = self.log.last_learned_seq()
        model = ExperimentModel(
            config.vw_args, epoch, config.model_update_interval_seconds, learned_seq=floor
        )
        runtime = _Runtime(config, epoch, model, now + HORIZON_SECONDS)
        self._runtimes[config.name] = runtime
        self._set_model(config.name, model)
        log.info("experiment_created", experiment=config.name, vw_args=config.vw_args)
        return self._status(runtime)

    def _check_name_free(self, name: str) -> None:
        if name in self._runtimes:
            raise AlreadyExists(f"experiment {name!r} already exists")
        if name in self._deleting:
            raise Unavailable(f"experiment {name!r} is being deleted; try again")

    def get_experiment(self, name: str) -> ExperimentStatus:
        return self._status(self._runtime(name, "name"))

    def list_experiments(self) -> list[ExperimentStatus]:
        return [self._status(self._runtimes[name]) for name in sorted(self._runtimes)]

    async def update_experiment(self, config: ExperimentConfig) -> ExperimentStatus:
        runtime = self._runtime(config.name, "experiment.name")
        return await self._run_to_end(self._update(runtime, config))

    async def _update(self, runtime: _Runtime, config: ExperimentConfig) -> ExperimentStatus:
        # Held by this background task, not the caller, so a caller that goes away cannot let
        # the next update in while this one is still validating or retraining.
        async with runtime.update_lock:
            # Validating takes ~0.3 s (VW runs in a child process first); a caller leaving
            # meanwhile must not undo the update, and a later one must not overtake it.
            config = await self._validated(config)
            if self._runtimes.get(config.name) is not runtime:
                raise NotFound(f"experiment {config.name!r} was deleted meanwhile")
            if config.vw_args == runtime.config.vw_args:
                model, interval = runtime.model, config.model_update_interval_seconds
                # On the learner thread: a snapshot serializes the model (milliseconds).
                await asyncio.to_thread(
                    self.learner.call, lambda: model.set_update_interval(interval)
                )
                self._save_config(config)
                runtime.config = config
            else:
                await self._retrain(runtime, config)
        log.info("experiment_updated", experiment=config.name, vw_args=config.vw_args)
        return self._status(runtime)

    async def _validated(self, config: ExperimentConfig) -> ExperimentConfig:
        """`config` with its vw_args checked, on a thread of its own: a check can take up to
        vw_probe.PROBE_SECONDS and must not hold a thread that stop() or the learner needs."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._validator, _with_valid_args, config)

    def _save_config(self, config: ExperimentConfig) -> None:
        self.log.execute_admin(
            "UPDATE experiments SET config = ?, updated_at = ? WHERE name = ?",
            (json.dumps(config.to_json_dict()), self._clock(), config.name),
        )

    async def _retrain(self, runtime: _Runtime, config: ExperimentConfig) -> None:
        """Retrain on the whole learned log with `config` (new vw_args, or the same ones after
        marking events unlearnable), so the model stays "fresh VW with these args + the learned
        lines". The replay runs on the learner's rebuild thread (other experiments learn on,
        and Rank serves the old model meanwhile); the swap runs on the learner thread, all or
        nothing: the settings are saved, the new model replaces the old one and first learns
        what the old one learned meanwhile."""
        old_model = runtime.model
        try:
            model = await asyncio.wrap_future(
                self.learner.build(
                    lambda pace: self._restore_model(config, runtime.epoch, pace),
                    (runtime.deleted, self._stop_retrains),
                )
            )
        except Abandoned:
            if self._stop_retrains.is_set():
                raise Unavailable(
                    "the server is stopping; the update was not applied: send it again once "
                    "the server is back"
                ) from None
            raise NotFound(f"experiment {config.name!r} was deleted meanwhile") from None

        def swap() -> None:
            rows = self.learner.catch_up_rows(config.name, model)  # may fail: nothing changed
            with self._models_lock:
                if old_model.deleted or self._models.get(config.name) is not old_model:
                    raise NotFound(f"experiment {config.name!r} was deleted meanwhile")
                self._save_config(config)
                self._set_model(config.name, model)
                runtime.model = model
                runtime.config = config
            self.learner.catch_up(config.name, rows)

        await asyncio.to_thread(self.learner.call, swap)

    async def rebuild_model(self, name: str, skip_event_ids: Sequence[str]) -> ExperimentStatus:
        """Rebuild the model from the log, as a restart would, after marking `skip_event_ids`
        (learned events of the experiment) unlearnable, under every vw_args."""
        runtime = self._runtime(name, "name")
        check_skip_ids(skip_event_ids)
        return await self._run_to_end(self._rebuild_model(runtime, tuple(skip_event_ids)))

    async def _rebuild_model(self, runtime: _Runtime, skip: tuple[str, ...]) -> ExperimentStatus:
        async with runtime.update_lock:  # vw_args, which the marks are for, stay as they are
            name, config = runtime.config.name, runtime.config
            if self._runtimes.get(name) is not runtime:
                raise NotFound(f"experiment {name!r} was deleted meanwhile")
            if skip:
                seqs = await self._read(self.log.learned_seqs, name, skip)
                for i, event_id in enumerate(skip):
                    if event_id not in seqs:
                        raise InvalidArgument(
                            f"skip_event_ids[{i}]",
                            f"{describe(event_id)} is not a learned event of experiment "
                            f"{name!r} (unknown, its reward window is still open, or it was "
                            "deferred and never activated)",
                        )
                await asyncio.to_thread(
                    self.learner.call, lambda: self._mark_skipped(runtime, config, seqs)
                )
            recorded = " (the skipped events are recorded)" if skip else ""
            try:
                await self._retrain(runtime, config)
            except Unavailable:
                raise Unavailable(
                    "the server is stopping before the rebuilt model was in place; a restart "
                    f"rebuilds it{recorded}"
                ) from None
            except NotFound:
                raise
            except Exception as exc:
                log.exception("model_rebuild_failed", experiment=name)
                raise Unavailable(
                    f"rebuilding the model failed: {describe(exc)}{recorded}; Rank serves the "
                    "model as it was until RebuildModel or a restart rebuilds it"
                ) from exc
        log.info("model_rebuilt", experiment=name, skipped=len(skip))
        return self._status(runtime)

    def _mark_skipped(
        self, runtime: _Runtime, config: ExperimentConfig, seqs: dict[str, int]
    ) -> None:
        """On the learner thread, so no checkpoint is being written meanwhile: the model that
        learned these events stops checkpointing and its checkpoints from the first one on go,
        before the marks are written (a restart in between then replays without them)."""
        model = runtime.model
        with self._models_lock:  # deleted, perhaps created again, since `seqs` was read
            if model.deleted or self._models.get(config.name) is not model:
                raise NotFound(f"experiment {config.name!r} was deleted meanwhile")
        if self.learner.rebuilding(config.name):
            # It writes and reads marks of its own: which would win is a race.
            raise Unavailable(
                "the model is being rebuilt after an event that broke it; nothing was skipped: "
                "try again once that is done"
            )
        model.outdated = True
        rows = sorted((seq, event_id) for event_id, seq in seqs.items())
        try:
            self._store.discard_after(config.name, rows[0][0] - 1)
            self.log.mark_skipped(config.name, rows, SKIPPED_ON_REQUEST, time.time(), CASCADE_AFTER)
        except Exception as exc:
            model.outdated = False  # nothing marked: its checkpoints are right again
            raise Unavailable(
                f"the skipped events could not be recorded: {describe(exc)}; nothing was skipped"
            ) from exc
        log.warning("events_marked_unlearnable", experiment=config.name, count=len(rows))

    async def _run_to_end(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to its end even if the caller goes away (stop() waits for it)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return await asyncio.shield(task)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        error = None if task.cancelled() else task.exception()
        # Its caller may be gone: make sure a failure is seen, unless it was the request's.
        if error is not None and not isinstance(error, (InvalidArgument, NotFound)):
            log.warning("experiment_change_failed", error=describe(error))

    async def delete_experiment(self, name: str) -> None:
        runtime = self._runtime(name, "name")
        del self._runtimes[name]
        with self._models_lock:
            runtime.model.deleted = True
            self._set_model(name, None)
        runtime.deleted.set()
        self._deleting.add(name)
        await self._run_to_end(self._finish_delete(name, runtime))

    async def _finish_delete(self, name: str, runtime: _Runtime) -> None:
        try:
            try:
                # Through the group commit, so rows already queued for it (an in-flight Rank,
                # closing windows) are committed first and deleted with the rest.
                await self._commit([DeleteExperimentRow(name)])
            except Unavailable:
                # Nothing was deleted, but what happened to the experiment meanwhile (learned
                # rows, windows) was dropped: rebuild it from the log, as a restart would.
                try:
                    await self._reinstall(name)
                except Exception:
                    # Keep serving what there was; it missed events meanwhile, so it must not
                    # learn past them: stalled until a restart replays the log.
                    log.exception("experiment_reinstall_failed", experiment=name)
                    runtime.model.deleted = False
                    runtime.deleted.clear()
                    runtime.model.stall(
                        "it missed events while a delete failed; RebuildModel or a restart "
                        "replays them"
                    )
                    self._set_model(name, runtime.model)
                    self._runtimes[name] = runtime
                raise
            # On the learner thread, so a checkpoint being written cannot outlive the deletion.
            await asyncio.to_thread(
                self.learner.call, lambda: self.learner.forget(name, self._store)
            )
        finally:
            self._deleting.discard(name)
        log.info("experiment_deleted", experiment=name)

    async def _reinstall(self, name: str) -> None:
        row = next(row for row in self.log.experiments() if row.name == name)
        # On the learner thread, so its replay and the learning of queued rows do not overlap.
        runtime = await asyncio.to_thread(self.learner.call, lambda: self._load_runtime(row))
        assert isinstance(runtime, _Runtime)
        self._add_runtime(runtime)
        log.warning("experiment_delete_failed", experiment=name)

    # -- the loop ----------------------------------------------------------------------------

    def _commit(
        self,
        rows: Sequence[Row],
        on_committed: Callable[[], None] | None = None,
        on_failed: Callable[[], None] | None = None,
    ) -> asyncio.Future[list[LearnedRow]]:
        """Queue rows for the group commit. `on_committed` (or `on_failed`) runs on the loop once
        the rows are durable (or could not be committed), even if the caller was cancelled."""
        if self._stopping:
            if on_failed is not None:
                on_failed()
            raise Unavailable("the server is shutting down")
        assert self._loop is not None
        future: asyncio.Future[list[LearnedRow]] = self._loop.create_future()
        learner, settles = self.learner, self._settles

        def done(error: BaseException | None, learned: list[LearnedRow]) -> None:
            for row in learned:  # on the writer thread, in commit order
                learner.enqueue(row.experiment, row)
            settles.append((future, error, learned, on_committed, on_failed))

        try:
            committed_here = self.log.submit(rows, done)
        except Exception as exc:
            if on_failed is not None:
                on_failed()
            raise Unavailable(f"the decision log could not commit: {describe(exc)}") from exc
        if committed_here:
            self._drain_settles()
        return future

    def _drain_settles(self) -> None:
        settles = self._settles
        while settles:
            future, error, learned, on_committed, on_failed = settles.popleft()
            callback = on_committed if error is None else on_failed
            if callback is not None:
                try:
                    callback()
                except Exception:  # one bad callback must not strand the settles after it
                    log.exception("commit_callback_failed")
            if future.done():
                continue
            if isinstance(error, DuplicateDecision):
                future.set_exception(error)
            elif error is not None:
                future.set_exception(
                    Unavailable(f"the decision log could not commit: {describe(error)}")
                )
            else:
                future.set_result(learned)

    async def rank(self, request: RankInput) -> RankResult:
        runtime = self._runtime(request.experiment)
        # The checks hold for the model that predicts: a retrain swaps in its model before its
        # config, so the config's vw_args may not be that model's yet.
        model = runtime.model
        vw_args = model.vw_args
        bound = number_bound(vw_args)
        if bound < MAX_NUMBER:  # the model interacts namespaces: products must stay in range
            check_interacted_numbers(request, bound, interaction_order(vw_args))
        event_id = request.event_id or uuid.uuid4().hex
        candidates = request.candidates()
        limited = action_limit(vw_args)
        if limited is not None and len(candidates) > limited[1]:
            option, limit = limited
            raise InvalidArgument(
                "actions",
                f"{len(candidates)} candidate actions, more than {limit}, the most this "
                f"experiment's {option} allows (its cost grows far faster than the actions)",
            )
        c_json = context_json(request.context, candidates)
        pmf, version = model.predict(c_json)
        ranking, probabilities = sampling.draw(
            pmf, sampling.event_uniform(request.experiment, event_id)
        )
        now = self._clock()
        deadline = now + runtime.config.reward_wait_seconds
        row = DecisionRow(
            experiment=request.experiment,
            event_id=event_id,
            timestamp=now,
            deadline=deadline,
            user_id=request.user_id,
            deferred=request.defer_activation,
            c_json=c_json,
            action_ids=tuple(action.id for action in candidates),
            excluded_json=_excluded_json(request),
            ranking=ranking,
            probabilities=probabilities,
            model_version=version,
        )

        self._pend(deadline)

        # A Reward sent with its Rank can arrive after the commit and before `register` runs:
        # it waits for this (see _record_outcome) instead of missing the event's window.
        committing = runtime.committing
        assert self._loop is not None
        registered: asyncio.Future[None] = self._loop.create_future()
        committing.setdefault(event_id, registered)  # a repeat waits on the original

        def settled() -> None:
            self._unpend(deadline)
            if committing.get(event_id) is registered:
                del committing[event_id]
            registered.set_result(None)

        def register() -> None:
            settled()
            # Not if deleted meanwhile, nor if the loader read it in already; a window closing
            # past the horizon waits in the log (see HORIZON_SECONDS).
            if (
                self._runtimes.get(request.experiment) is runtime
                and event_id not in runtime.open
                and (deadline - now <= HORIZON_SECONDS or deadline <= runtime.loaded_until)
            ):
                self._hold(runtime, OpenEvent(event_id, deadline, request.defer_activation))

        self.ranks_in_flight += 1
        try:
            await self._commit([row], register, settled)
        except DuplicateDecision:
            # The log's UNIQUE constraint caught a repeated event id (also when two requests
            # raced): answer what the first one got, log nothing twice.
            existing = self.log.decision(request.experiment, event_id)
            if existing is None:  # the experiment was deleted since the UNIQUE check
                raise NotFound(f"experiment {request.experiment!r} was deleted meanwhile") from None
            return result_from_row(existing)
        finally:
            self.ranks_in_flight -= 1
        return result_from_row(row)

    async def reward(self, experiment: str, event_id: str, value: float) -> bool:
        """Log a reward; learn it when the aggregation says so. Returns whether it was late."""
        runtime = self._runtime(experiment)
        check_id("event_id", event_id, "event_id")
        check_number("value", value, MAX_REWARD)
        aggregation = runtime.config.aggregation
        return await self._record_outcome(
            runtime,
            event_id,
            lambda event, now: joiner.on_reward(event, value, now, aggregation),
            lambda now, late: RewardRow(experiment, event_id, now, value, late),
        )

    async def activate(self, experiment: str, event_id: str) -> bool:
        """Log an activation; learn at once if an earliest reward was waiting. Returns late."""
        runtime = self._runtime(experiment)
        check_id("event_id", event_id, "event_id")
        aggregation = runtime.config.aggregation
        return await self._record_outcome(
            runtime,
            event_id,
            lambda event, now: joiner.on_activate(event, now, aggregation),
            lambda now, late: ActivationRow(experiment, event_id, now, late),
        )

    async def _record_outcome(
        self,
        runtime: _Runtime,
        event_id: str,
        transition: Callable[[OpenEvent, float], tuple[bool, float | None]],
        make_row: Callable[[float, bool], RewardRow | ActivationRow],
    ) -> bool:
        """Apply a reward or activation to the event's window and commit it, with the learned row
        it triggered, in one transaction. Outcomes of one event are applied one at a time, each
        after the previous one's commit settled, so a failed commit can put the window back
        exactly as it was (and a client's retry counts once). With interval 0, return only once
        the model has learned it, so the next Rank sees it. Returns whether it was late."""
        experiment = runtime.config.name
        key = (experiment, event_id)
        stored: OpenEvent | None = None  # its window as the log has it, when not held
        read = False
        while True:
            if (previous := self._busy.get(key)) is not None:
                await asyncio.shield(previous)
                read = False  # what was read may have changed meanwhile
            elif (ranking := runtime.committing.get(event_id)) is not None:
                await asyncio.shield(ranking)
                read = False
            elif not read and event_id not in runtime.open:
                stored = await self._read_window(key)
                read = True
            else:
                break
            if self._runtimes.get(experiment) is not runtime:
                raise Unavailable(f"experiment {experiment!r} changed while this call waited")
        now = self._clock()
        event = runtime.open.get(event_id)
        brought_in = False
        if event is None and stored is not None and now <= stored.deadline:
            event = self._bring_in(runtime, stored)
            brought_in = True
        cost: float | None = None
        before = None
        if event is None:
            late = True
        else:
            before = joiner.snapshot(event)
            try:
                late, cost = transition(event, now)
            except Exception:  # a refused input (a sum past the limit) changed nothing
                if brought_in:
                    self._hold_or_return(runtime, event)
                raise
        rows: list[Row] = [make_row(now, late)]
        if cost is not None:
            rows.append(LearnedRow(experiment, event_id, cost, now))
        assert self._loop is not None
        settled: asyncio.Future[None] = self._loop.create_future()
        self._busy[key] = settled

        def release() -> None:
            if brought_in and event is not None:
                self._hold_or_return(runtime, event)
            if self._busy.get(key) is settled:
                del self._busy[key]
            settled.set_result(None)

        def put_back() -> None:
            if event is not None and before is not None:
                joiner.restore(event, before)
            release()

        learned = await self._commit(rows, release, put_back)
        if learned and runtime.config.model_update_interval_seconds == 0:
            await self.learner.wait_learned(experiment, runtime.model, learned[-1].seq)
        return late

    async def _read_window(self, key: tuple[str, str]) -> OpenEvent | None:
        """The window of an event not held in memory, as the log has it (a window past the
        horizon, or one a restart did not reopen because it was learned); None when it has
        closed; NotFound for an unknown event. Read off the event loop (four reads, which may
        wait for the disk); other inputs for the event, and its close, wait meanwhile, so that
        each reads it only after the one before has committed."""
        with self._busy_while([key]):
            return await self._read(self._window_from_log, *key)

    @contextlib.contextmanager
    def _busy_while(self, keys: list[tuple[str, str]]) -> Iterator[None]:
        """Inputs for these events, and their close, wait (see `_busy`) until the block ends."""
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()
        for key in keys:
            self._busy[key] = done
        try:
            yield
        finally:
            for key in keys:
                if self._busy.get(key) is done:
                    del self._busy[key]
            done.set_result(None)

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)`, a read of the log, on the read threads (see `_reads`)."""
        assert self._loop is not None
        try:
            reading = self._loop.run_in_executor(self._reads, fn, *args)
        except RuntimeError:  # asked after stop() shut the read threads down
            raise Unavailable("the server is stopping") from None
        return await reading

    def _window_from_log(self, experiment: str, event_id: str) -> OpenEvent | None:
        row = self.log.decision(experiment, event_id)
        if row is None:
            raise NotFound(f"event {event_id!r} is not a decision of experiment {experiment!r}")
        if self._clock() > row.deadline:
            return None
        return event_from_log(self.log, row)

    def _bring_in(self, runtime: _Runtime, event: OpenEvent) -> OpenEvent:
        """Hold a window read from the log while an input to it commits, so the loader cannot
        read it in without that input, counted among the pending deadlines, so the watermark
        cannot pass it meanwhile; then _hold_or_return decides."""
        runtime.open[event.event_id] = event
        self._pend(event.deadline)
        return event

    def _hold_or_return(self, runtime: _Runtime, event: OpenEvent) -> None:
        """After an input to a window brought in from the log has settled: hold it if it now
        closes within what is held, or give it back to the log, which has the input."""
        self._unpend(event.deadline)
        if self._runtimes.get(runtime.config.name) is not runtime:
            return
        if runtime.open.get(event.event_id) is not event:
            return
        if event.deadline > runtime.loaded_until:
            del runtime.open[event.event_id]
        else:
            self._hold(runtime, event)

    def _hold(self, runtime: _Runtime, event: OpenEvent) -> None:
        """Hold a window in memory: in `open`, and in the heap the close takes deadlines from."""
        runtime.open[event.event_id] = event
        heapq.heappush(self._deadlines, (event.deadline, runtime.config.name, event.event_id))

    def _pend(self, deadline: float) -> None:
        """A window not yet in the heap is committing: the watermark stays below it."""
        pending = self._pending_deadlines
        pending[deadline] = pending.get(deadline, 0) + 1

    def _unpend(self, deadline: float) -> None:
        pending = self._pending_deadlines
        left = pending[deadline] - 1
        if left:
            pending[deadline] = left
        else:
            del pending[deadline]

    # -- reward windows --------------------------------------------------------------------

    async def _close_windows_forever(self) -> None:
        last_watermark = 0.0
        while True:
            try:
                await self.load_due_windows()
                await self.close_due_windows()
                if time.monotonic() - last_watermark >= WATERMARK_EVERY_SECONDS:
                    last_watermark = time.monotonic()
                    await self._save_watermarks()
            except Unavailable:  # the log could not commit; the windows stay open, retry
                log.exception("window_close_failed")
                await asyncio.sleep(WINDOW_TICK_SECONDS)
            delay = WINDOW_TICK_SECONDS
            if self._deadlines:
                due_in = self._deadlines[0][0] - self._clock()
                delay = min(delay, max(MIN_WINDOW_TICK_SECONDS, due_in))
            await asyncio.sleep(delay)

    async def load_due_windows(self) -> None:
        """Bring in from the log the windows entering the horizon (see HORIZON_SECONDS)."""
        for name, runtime in list(self._runtimes.items()):
            after, up_to = runtime.loaded_until, self._clock() + HORIZON_SECONDS
            if after > up_to - LOAD_EVERY_SECONDS:
                continue
            # Ranks registering from now on hold such windows themselves; those committed
            # before are in the log for the read.
            runtime.loaded_until = up_to
            try:
                events = await self._read(open_events, self.log, name, after, up_to)
            except Exception:
                # Tried again next tick; closed_until stays below `after` meanwhile (see
                # _save_watermarks), so a restart reopens what this read did not bring in.
                runtime.loaded_until = min(runtime.loaded_until, after)
                if not runtime.load_failing:  # once, not every tick while it keeps failing
                    log.exception("window_load_failed", experiment=name)
                runtime.load_failing = True
                continue
            runtime.load_failing = False
            if self._runtimes.get(name) is not runtime:
                continue
            for event in events:
                if event.event_id in runtime.open:
                    continue  # Rank registered it, or an input holds it, meanwhile
                self._hold(runtime, event)

    async def close_due_windows(self) -> int:
        """Close every window whose deadline has passed; learn what the aggregation says."""
        now = self._clock()
        rows: list[Row] = []
        closed: list[tuple[_Runtime, OpenEvent, joiner.State]] = []
        busy: list[tuple[float, str, str]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            entry = heapq.heappop(self._deadlines)
            _, experiment, event_id = entry
            runtime = self._runtimes.get(experiment)
            event = None if runtime is None else runtime.open.get(event_id)
            if runtime is None or event is None or event.deadline > now:
                continue  # gone, or an entry left by a deleted experiment of the same name
            if (experiment, event_id) in self._busy:
                busy.append(entry)  # a reward's commit is in flight: close on the next tick
                continue
            del runtime.open[event_id]
            before = joiner.snapshot(event)
            cost = joiner.on_close(event, runtime.config.aggregation, runtime.config.default_reward)
            if cost is not None:
                rows.append(LearnedRow(experiment, event_id, cost, now))
            closed.append((runtime, event, before))
        for entry in busy:
            heapq.heappush(self._deadlines, entry)
        if rows:
            # An input for these waits for this commit (see _record_outcome), so that one that
            # brings its window back from the log finds it learned.
            keys = [(runtime.config.name, event.event_id) for runtime, event, _ in closed]
            with self._busy_while(keys):
                try:
                    await self._commit(rows)
                except Unavailable:
                    for runtime, event, before in closed:  # reopen them: the next tick retries
                        joiner.restore(event, before)
                        if self._runtimes.get(runtime.config.name) is runtime:
                            self._hold(runtime, event)
                    raise
        for runtime, event, _ in closed:
            runtime.closed_until = max(runtime.closed_until, event.deadline)
        return len(closed)

    async def _save_watermarks(self) -> None:
        # Capped below the earliest deadline still waiting in the heap or still committing: an
        # event registered late (a clock stepped back, a commit that outlasted its window) may
        # have a deadline below windows already closed, and a restart must still reopen it.
        # Reopening a closed event is harmless: learned ones are skipped, the others close again
        # without learning.
        earliest = min(
            self._deadlines[0][0] if self._deadlines else math.inf,
            min(self._pending_deadlines, default=math.inf),
        )
        cap = math.nextafter(earliest, -math.inf)
        rows: list[Row] = [
            # Nor past the windows still in the log only (their read may have failed).
            WatermarkRow(name, min(runtime.closed_until, cap, runtime.loaded_until))
            for name, runtime in self._runtimes.items()
            if runtime.closed_until > float("-inf")
        ]
        if rows:
            await self._commit(rows)

    # -- introspection (tests, benchmarks) -------------------------------------------------

    def model(self, experiment: str) -> ExperimentModel:
        return self._runtime(experiment).model


def _with_valid_args(config: ExperimentConfig) -> ExperimentConfig:
    args = validate_args(config.vw_args, "experiment.vw_args", isolate=True)
    if args == config.vw_args:
        return config
    return ExperimentConfig(
        config.name,
        args,
        config.reward_wait_seconds,
        config.default_reward,
        config.aggregation,
        config.model_update_interval_seconds,
    )


def check_skip_ids(event_ids: Sequence[str]) -> None:
    """Raise InvalidArgument naming the field for ids RebuildModel cannot take."""
    if len(event_ids) > MAX_SKIPPED_EVENTS:
        raise InvalidArgument(
            "skip_event_ids", f"{len(event_ids)} ids, more than {MAX_SKIPPED_EVENTS:,}"
        )
    first: dict[str, int] = {}
    for i, event_id in enumerate(event_ids):
        if not event_id:
            raise InvalidArgument(f"skip_event_ids[{i}]", "is empty")
        if event_id in first:
            raise InvalidArgument(
                f"skip_event_ids[{i}]",
                f"{describe(event_id)} repeats skip_event_ids[{first[event_id]}]",
            )
        first[event_id] = i
