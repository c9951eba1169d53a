"""A model broken by an event is rebuilt off the learner thread, so other experiments learn on.

A rebuild replays the log (~80 us an event, the whole log under --bag/--cover/--rnd/--cb_dro):
on the shared learner thread one poison event held every other experiment's learning, and with
it their interval-0 Rewards, for as long (0.67 s at 8,000 events; found by an adversarial run).
The rebuild here is held at a gate, so the tests do not depend on timing: with the rebuild on
the learner thread they fail (the other experiment's Reward times out).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bandit_server.core.dsjson import prediction_line
from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.core.types import Feature, Namespace, RankInput
from bandit_server.engine import engine as engine_module
from bandit_server.engine import learner as learner_module
from bandit_server.engine.engine import Engine
from bandit_server.engine.rebuild import HeldRows
from bandit_server.errors import NotFound, Unavailable
from bandit_server.export import iter_dsjson
from bandit_server.storage.sqlite_log import SQLiteDecisionLog
from tests.helpers import normalised, replay
from tests.test_reward_windows import ACTIONS, Clock, run

BROKEN_ARGS = "--cb_explore_adf --ftrl --squarecb"  # a 1e10 feature and a 1e15 reward break it
OTHER_ARGS = "--cb_explore_adf --squarecb"
PROBE = (Namespace("User", (Feature("x", 0.25), Feature("s", "s1"))),)
GUARD_SECONDS = 60  # a bound against hanging, never reached when the code is right


class Gate:
    """Holds the rebuilds that `module` starts (the learner's by default) until opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object = learner_module) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()
        self.rebuilds = 0
        real = module.restore_model  # type: ignore[attr-defined]

        def gated(*args: object, **kwargs: object) -> object:
            if kwargs.get("pace") is None:  # not a rebuild: a start or a new experiment
                return real(*args, **kwargs)
            self.rebuilds += 1
            self.started.set()
            if not self.opened.wait(GUARD_SECONDS):
                raise AssertionError("the gate was never opened")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(module, "restore_model", gated)


async def _rank(engine: Engine, experiment: str, event_id: str, x: float) -> None:
    context = (Namespace("User", (Feature("x", x), Feature("s", "s1"))),)
    ranked = await engine.rank(RankInput(experiment, event_id, context, ACTIONS))
    assert all(math.isfinite(p) for _, p in ranked.ranking)


async def _event(engine: Engine, experiment: str, event_id: str, x: float, reward: float) -> None:
    await _rank(engine, experiment, event_id, x)
    await engine.reward(experiment, event_id, reward)


async def _handled(engine: Engine, experiment: str, count: int) -> None:
    for _ in range(4_000):
        status = engine.get_experiment(experiment)
        if status.learned_events + status.unlearnable_events >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{experiment} never reached {count} events")


async def _probe(engine: Engine, event_id: str) -> dict[str, float]:
    ranked = await engine.rank(RankInput("w", event_id, PROBE, ACTIONS))
    return dict(ranked.ranking)


def _fresh_vw_probe(data_dir: Path, vw_args: str = BROKEN_ARGS) -> dict[str, float]:
    """What a fresh VW with `vw_args` trained on the export's learned lines serves on the probe."""
    lines = list(iter_dsjson(data_dir, "w"))
    policy, _, _ = replay(vw_args, lines)
    c = json.loads(lines[0])["c"]
    c["User"] = {"x": 0.25, "s": "s1"}
    pmf = policy.predict_one(prediction_line(json.dumps(c, separators=(",", ":"))))
    return {f"a{index}": p for index, p in normalised(pmf).items()}


async def _setup(engine: Engine, interval: float) -> None:
    await engine.create_experiment(
        ExperimentConfig("w", BROKEN_ARGS, 10.0, 0.0, Aggregation.EARLIEST, interval)
    )
    await engine.create_experiment(
        ExperimentConfig("b", OTHER_ARGS, 10.0, 0.0, Aggregation.EARLIEST, 0.0)
    )
    for i in range(10):
        await _event(engine, "w", f"n{i}", 0.1 * i, float(i % 2))
    for i in range(3):  # ranked now, rewarded while the model is being rebuilt
        await _rank(engine, "w", f"m{i}", 0.2 * i)
    await _rank(engine, "w", "poison", 1e10)


@pytest.mark.parametrize("interval", [0.0, 0.05])
def test_other_experiments_learn_while_a_broken_model_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: float
) -> None:
    gate = Gate(monkeypatch)
    monkeypatch.setattr(learner_module, "MAX_BATCH", 2)  # held rows are learned in batches
    served: list[dict[str, float]] = []
    checkpoints = tmp_path / "models" / "w"

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, interval)
        # With interval 0 a Reward returns once its event is learned: this one, after the
        # rebuild; so are the rewards below, held until the model is back.
        poison = asyncio.ensure_future(engine.reward("w", "poison", 1e15))
        assert await asyncio.to_thread(gate.started.wait, GUARD_SECONDS)
        held = [asyncio.ensure_future(engine.reward("w", f"m{i}", float(i % 2))) for i in range(3)]
        if interval > 0:
            await asyncio.gather(poison, *held)  # Rank keeps the last good snapshot
            await _rank(engine, "w", "during", 0.5)
        else:
            with pytest.raises(Unavailable, match="being restored"):
                await _rank(engine, "w", "during", 0.5)
        for i in range(5):  # each Reward returns once "b" learned it
            await asyncio.wait_for(_event(engine, "b", f"b{i}", 0.1 * i, 1.0), GUARD_SECONDS)
        assert engine.get_experiment("b").learned_events == 5
        assert engine.get_experiment("w").learned_events == 10
        saved = sorted(checkpoints.glob("*"))
        await asyncio.to_thread(engine.learner.call, engine.learner.checkpoint_all)
        assert sorted(checkpoints.glob("*")) == saved  # never the broken model
        gate.opened.set()
        await asyncio.gather(poison, *held)
        await _handled(engine, "w", 14)
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (13, 1)
        assert not status.learning_stalled
        await asyncio.sleep(interval)  # the next snapshot includes the held events
        await _handled(engine, "w", 14)
        if interval == 0:
            served.append(await _probe(engine, "probe-1"))

    run(tmp_path, scenario)
    assert gate.rebuilds == 1
    expected = _fresh_vw_probe(tmp_path)
    if served:
        assert served[0] == expected

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (13, 1)
        assert await _probe(engine, "probe-2") == expected

    run(tmp_path, after_restart)


def test_deleting_an_experiment_during_its_rebuild_releases_what_it_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Reward waiting on the rebuild returns when the experiment is deleted, and an
    experiment created again under the name never sees the old rows."""
    gate = Gate(monkeypatch)

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.0)
        poison = asyncio.ensure_future(engine.reward("w", "poison", 1e15))
        assert await asyncio.to_thread(gate.started.wait, GUARD_SECONDS)
        # Before, the deletion waited for the rebuild on the learner thread.
        await asyncio.wait_for(engine.delete_experiment("w"), GUARD_SECONDS / 3)
        await asyncio.wait_for(poison, GUARD_SECONDS / 3)
        gate.opened.set()
        await engine.create_experiment(ExperimentConfig("w", BROKEN_ARGS, 10.0, 0.0))
        for i in range(3):
            await _event(engine, "w", f"again{i}", 0.1 * i, 1.0)
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (3, 0)
        assert not status.learning_stalled

    run(tmp_path, scenario)


def test_other_experiments_learn_while_new_vw_args_retrain_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changing vw_args retrains on the whole learned log. Before, that ran on the learner
    thread and held every other experiment's learning for as long. Now Rank serves the old
    model meanwhile, which learns on, and the new model learns what it learned once it is in
    place: the result is a fresh VW with the new args trained on the export."""
    gate = Gate(monkeypatch, engine_module)
    new_args = "--cb_explore_adf --squarecb -q UA"
    served: list[dict[str, float]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(ExperimentConfig("w", OTHER_ARGS, 10.0, 0.0))
        await engine.create_experiment(ExperimentConfig("b", OTHER_ARGS, 10.0, 0.0))
        for i in range(10):
            await _event(engine, "w", f"n{i}", 0.1 * i, float(i % 2))
        update = asyncio.ensure_future(
            engine.update_experiment(ExperimentConfig("w", new_args, 10.0, 0.0))
        )
        assert await asyncio.to_thread(gate.started.wait, GUARD_SECONDS)
        for i in range(4):  # the old model serves and learns (each Reward waits for it)
            await asyncio.wait_for(
                _event(engine, "w", f"during{i}", 0.3 * i, float(i % 2)), GUARD_SECONDS
            )
            await asyncio.wait_for(_event(engine, "b", f"b{i}", 0.1 * i, 1.0), GUARD_SECONDS)
        status = engine.get_experiment("w")
        assert (status.config.vw_args, status.learned_events) == (OTHER_ARGS, 14)
        assert engine.get_experiment("b").learned_events == 4
        gate.opened.set()
        status = await update
        assert (status.config.vw_args, status.learned_events) == (new_args, 14)
        await _event(engine, "w", "after", 0.7, 1.0)
        assert engine.get_experiment("w").learned_events == 15
        served.append(await _probe(engine, "probe-1"))

    run(tmp_path, scenario)
    assert gate.rebuilds == 1
    expected = _fresh_vw_probe(tmp_path, new_args)
    assert served == [expected]

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.config.vw_args, status.learned_events) == (new_args, 15)
        assert await _probe(engine, "probe-2") == expected

    run(tmp_path, after_restart)


def test_new_vw_args_during_a_rebuild_wait_for_it_and_learn_what_it_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vw_args change while the model is rebuilt after a poison event: the retrain runs after
    the rebuild (one rebuild thread), and the new model equals a fresh VW with the new args
    trained on the export. (A retrain that reads the log before the rebuild starts takes
    over its rows: see test_a_retrain_takes_over_the_rows_a_running_rebuild_held.)"""
    gate = Gate(monkeypatch)
    monkeypatch.setattr(learner_module, "MAX_BATCH", 1)
    new_args = "--cb_explore_adf --ftrl --squarecb -q UA"
    served: list[dict[str, float]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.0)
        poison = asyncio.ensure_future(engine.reward("w", "poison", 1e15))
        assert await asyncio.to_thread(gate.started.wait, GUARD_SECONDS)
        held = [asyncio.ensure_future(engine.reward("w", f"m{i}", float(i % 2))) for i in range(3)]
        update = asyncio.ensure_future(
            engine.update_experiment(ExperimentConfig("w", new_args, 10.0, 0.0))
        )
        await asyncio.sleep(0.1)  # let the update queue its retrain, if it gets that far
        gate.opened.set()
        status = await asyncio.wait_for(update, GUARD_SECONDS)
        await asyncio.gather(poison, *held)
        assert status.config.vw_args == new_args
        for i in range(3):
            await _event(engine, "w", f"after{i}", 0.3 * i, 1.0)
        status = engine.get_experiment("w")
        assert status.learned_events + status.unlearnable_events == 17
        assert not status.learning_stalled
        served.append(await _probe(engine, "probe-1"))

    run(tmp_path, scenario)
    expected = _fresh_vw_probe(tmp_path, new_args)
    assert served == [expected]

    async def after_restart(engine: Engine, clock: Clock) -> None:
        assert await _probe(engine, "probe-2") == expected

    run(tmp_path, after_restart)


class HeldBuild:
    """Holds every paced replay (here: a vw_args retrain) at its first pace until opened, so
    that its replay has read the log while the old model learns on (found by review: the
    catch-up was never exercised). The learner's own pacer (no `abandoned`) runs freely."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started, self.opened = threading.Event(), threading.Event()
        held = self
        real = learner_module.Pacer

        class Held(real):  # type: ignore[misc,valid-type]
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, **kwargs)
                self.first = True

            def __call__(self) -> None:
                if self.first and self.abandoned:
                    self.first = False
                    held.started.set()
                    for _ in range(GUARD_SECONDS * 200):  # until opened or abandoned
                        if held.opened.wait(0.005) or any(e.is_set() for e in self.abandoned):
                            break
                    else:
                        raise AssertionError("never opened")
                super().__call__()

        monkeypatch.setattr(learner_module, "Pacer", Held)


def _batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    real = learner_module.Learner._learn_now

    def learn_now(self: learner_module.Learner, experiment: str, rows: list[object]) -> None:
        sizes.append(len(rows))
        real(self, experiment, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(learner_module.Learner, "_learn_now", learn_now)
    return sizes


def test_a_retrain_catches_up_on_what_the_old_model_learned_a_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = HeldBuild(monkeypatch)
    monkeypatch.setattr(learner_module, "MAX_BATCH", 4)
    sizes = _batch_sizes(monkeypatch)
    new_args = "--cb_explore_adf --squarecb -q UA"
    served: list[dict[str, float]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(ExperimentConfig("w", OTHER_ARGS, 10.0, 0.0))
        for i in range(5):
            await _event(engine, "w", f"n{i}", 0.1 * i, float(i % 2))
        update = asyncio.ensure_future(
            engine.update_experiment(ExperimentConfig("w", new_args, 10.0, 0.0))
        )
        assert await asyncio.to_thread(build.started.wait, GUARD_SECONDS)
        for i in range(40):  # learned by the old model, then caught up by the new one
            await _event(engine, "w", f"d{i}", 0.01 * i, float(i % 2))
        build.opened.set()
        await asyncio.wait_for(update, GUARD_SECONDS)
        for i in range(3):
            await _event(engine, "w", f"after{i}", 0.2 * i, 1.0)
        status = engine.get_experiment("w")
        assert (status.config.vw_args, status.learned_events) == (new_args, 48)
        served.append(await _probe(engine, "probe"))
        assert max(sizes) <= 4  # a batch per pass, not the 40 in one go

    run(tmp_path, scenario)
    assert served == [_fresh_vw_probe(tmp_path, new_args)]


def test_a_retrain_takes_over_the_rows_a_running_rebuild_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrain's build reads the log, then the old model breaks on a poison event and its
    rebuild is queued behind the build (one rebuild thread); the new model abandons that
    rebuild (queued or started by then) and learns what it held."""
    build = Gate(monkeypatch, engine_module)
    rebuild = Gate(monkeypatch)
    monkeypatch.setattr(learner_module, "MAX_BATCH", 2)
    sizes = _batch_sizes(monkeypatch)
    served: list[dict[str, float]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.0)
        update = asyncio.ensure_future(
            engine.update_experiment(ExperimentConfig("w", OTHER_ARGS, 10.0, 0.0))
        )
        assert await asyncio.to_thread(build.started.wait, GUARD_SECONDS)
        for i in range(4):
            await _rank(engine, "w", f"d{i}", 0.1)
        rewards = [asyncio.ensure_future(engine.reward("w", "poison", 1e15))]
        rewards += [asyncio.ensure_future(engine.reward("w", f"m{i}", 1.0)) for i in range(3)]
        rewards += [asyncio.ensure_future(engine.reward("w", f"d{i}", 1.0)) for i in range(4)]
        for _ in range(4_000):  # until the old model learned the poison (a bound, not a timing)
            if engine.model("w").damaged:
                break
            await asyncio.sleep(0.005)
        assert engine.model("w").damaged
        build.opened.set()
        status = await asyncio.wait_for(update, GUARD_SECONDS)
        await asyncio.wait_for(asyncio.gather(*rewards), GUARD_SECONDS)
        rebuild.opened.set()  # abandoned: its result is never used
        assert status.config.vw_args == OTHER_ARGS
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (18, 0)
        served.append(await _probe(engine, "probe"))
        assert max(sizes) <= 2

    run(tmp_path, scenario)
    assert served == [_fresh_vw_probe(tmp_path, OTHER_ARGS)]


def test_a_retrain_whose_args_break_on_the_newest_event_does_not_rebuild_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrain marks the poison event and leaves it out; the learner had handled it with
    the old args, and the catch-up learned it again: the new model broke, a second whole-log
    rebuild ran, and Rank answered UNAVAILABLE right after the update (found by review)."""
    rebuilds = Gate(monkeypatch)
    rebuilds.opened.set()

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(ExperimentConfig("w", OTHER_ARGS, 10.0, 0.0))
        for i in range(10):
            await _event(engine, "w", f"n{i}", 0.1 * i, float(i % 2))
        await _event(engine, "w", "poison", 1e10, 1e15)  # fine without --ftrl
        status = await engine.update_experiment(ExperimentConfig("w", BROKEN_ARGS, 10.0, 0.0))
        assert (status.learned_events, status.unlearnable_events) == (10, 1)
        await _rank(engine, "w", "right-after", 0.5)
        await _event(engine, "w", "after", 0.5, 1.0)
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (11, 1)

    run(tmp_path, scenario)
    assert rebuilds.rebuilds == 0


def _failing_learned_rows(monkeypatch: pytest.MonkeyPatch, on: bool) -> dict[str, bool]:
    """Reads of learned rows fail while the returned switch's "on" is set."""
    failing = {"on": on}
    real = SQLiteDecisionLog.learned_rows

    def learned_rows(self: SQLiteDecisionLog, *args: object) -> object:
        if failing["on"]:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(SQLiteDecisionLog, "learned_rows", learned_rows)
    return failing


def test_a_retrain_that_cannot_read_its_catch_up_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the new settings were saved and the new model installed before the read, while
    Rank kept the old model, which no longer learned (found by review)."""
    build = HeldBuild(monkeypatch)
    failing = _failing_learned_rows(monkeypatch, on=True)
    new_args = "--cb_explore_adf --squarecb -q UA"
    served: list[dict[str, float]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(ExperimentConfig("w", OTHER_ARGS, 10.0, 0.0))
        for i in range(3):
            await _event(engine, "w", f"n{i}", 0.1 * i, 1.0)
        update = asyncio.ensure_future(
            engine.update_experiment(ExperimentConfig("w", new_args, 10.0, 0.0))
        )
        assert await asyncio.to_thread(build.started.wait, GUARD_SECONDS)
        await _event(engine, "w", "d0", 0.5, 1.0)
        build.opened.set()
        with pytest.raises(sqlite3.OperationalError):
            await update
        failing["on"] = False
        await _event(engine, "w", "after", 0.3, 1.0)  # the old model serves and learns it
        status = engine.get_experiment("w")
        assert (status.config.vw_args, status.learned_events) == (OTHER_ARGS, 5)
        served.append(await _probe(engine, "probe"))

    run(tmp_path, scenario)
    assert served == [_fresh_vw_probe(tmp_path, OTHER_ARGS)]

    async def after_restart(engine: Engine, clock: Clock) -> None:
        assert engine.get_experiment("w").config.vw_args == OTHER_ARGS
        assert await _probe(engine, "probe-2") == served[0]

    run(tmp_path, after_restart)


def test_deleting_an_experiment_stops_its_retrain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a deleted experiment's retrain ran to its end on the one rebuild thread (a
    whole-log replay), and other experiments' rebuilds waited behind it (found by review)."""
    build = HeldBuild(monkeypatch)

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.0)
        await engine.create_experiment(ExperimentConfig("v", BROKEN_ARGS, 10.0, 0.0))
        update = asyncio.ensure_future(
            engine.update_experiment(ExperimentConfig("w", OTHER_ARGS, 10.0, 0.0))
        )
        assert await asyncio.to_thread(build.started.wait, GUARD_SECONDS)
        await engine.delete_experiment("w")
        build.opened.set()
        with pytest.raises(NotFound, match="deleted meanwhile"):
            await asyncio.wait_for(update, GUARD_SECONDS)
        # The rebuild thread is free for another experiment's rebuild.
        for i in range(3):
            await _event(engine, "v", f"n{i}", 0.1 * i, 1.0)
        await asyncio.wait_for(_event(engine, "v", "poison", 1e10, 1e15), GUARD_SECONDS)
        status = engine.get_experiment("v")
        assert (status.learned_events, status.unlearnable_events) == (3, 1)

    run(tmp_path, scenario)


def test_a_checkpoint_damaged_on_disk_is_dropped_and_the_log_replayed(tmp_path: Path) -> None:
    """Before, a checkpoint file VW cannot load (bit rot, a faulty copy) stopped the whole
    server from starting ("Bad model format"), though the log holds all it held."""
    served: list[dict[str, float]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(ExperimentConfig("w", OTHER_ARGS, 10.0, 0.0))
        for round_ in range(2):  # two checkpoints: the newer one gets damaged
            for i in range(5):
                await _event(engine, "w", f"n{round_}-{i}", 0.1 * i, float(i % 2))
            await asyncio.to_thread(engine.learner.call, engine.learner.checkpoint_all)
        await _event(engine, "w", "last", 0.4, 1.0)
        served.append(await _probe(engine, "probe-1"))

    run(tmp_path, scenario)
    folder = tmp_path / "models" / "w"
    older, newer = sorted(folder.glob("*.vw"))[-2:]
    newer.write_bytes(newer.read_bytes()[:40] + b"damaged" * 20)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.learned_events, status.learning_stalled) == (11, False)
        assert await _probe(engine, "probe-2") == served[0]

    with capture_logs() as events:
        run(tmp_path, after_restart)
    (dropped,) = [e for e in events if e["event"] == "checkpoint_unreadable"]
    assert dropped["learned_seq"] == int(newer.stem)
    (restored,) = [e for e in events if e["event"] == "model_restored"]
    assert restored["checkpoint_seq"] == int(older.stem)  # the older one, then the log
    assert served[0] == _fresh_vw_probe(tmp_path, OTHER_ARGS)


def test_a_stop_during_a_retrain_stops_it_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the shutdown waited for the whole retrain (minutes on a large log: past a
    supervisor's grace period, so a kill -9 and no final checkpoint). Now the update fails
    with UNAVAILABLE and the experiment keeps its settings and everything it learned."""
    build = HeldBuild(monkeypatch)  # never opened: only the stop lets the retrain go
    new_args = "--cb_explore_adf --squarecb -q UA"
    outcome: list[BaseException] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(ExperimentConfig("w", OTHER_ARGS, 10.0, 0.0))
        for i in range(5):
            await _event(engine, "w", f"n{i}", 0.1 * i, 1.0)
        update = asyncio.ensure_future(
            engine.update_experiment(ExperimentConfig("w", new_args, 10.0, 0.0))
        )
        update.add_done_callback(lambda done: outcome.append(done.exception()))  # type: ignore[arg-type]
        assert await asyncio.to_thread(build.started.wait, GUARD_SECONDS)
        # The stop begins while the retrain is held.

    run(tmp_path, scenario)
    assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
    assert "stopping" in str(outcome[0])

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.config.vw_args, status.learned_events) == (OTHER_ARGS, 5)

    run(tmp_path, after_restart)


def test_a_stop_during_a_rebuild_stops_it_and_a_restart_redoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild after a broken event replays the whole log for some explorers (minutes on a
    large one): the shutdown no longer waits for it. The broken model is not checkpointed;
    the restart skips the marked event and learns everything else."""
    held = HeldBuild(monkeypatch)  # never opened: only the stop lets the rebuild go
    served: list[dict[str, float]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.05)
        await engine.reward("w", "poison", 1e15)
        assert await asyncio.to_thread(held.started.wait, GUARD_SECONDS)
        for i in range(3):
            await engine.reward("w", f"m{i}", float(i % 2))

    with capture_logs() as events:
        run(tmp_path, scenario)
    assert [e["experiment"] for e in events if e["event"] == "rebuild_stopped"] == ["w"]
    assert not [e for e in events if e["event"] == "learning_stalled"]

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (13, 1)
        assert not status.learning_stalled
        served.append(await _probe(engine, "probe"))

    monkeypatch.undo()
    run(tmp_path, after_restart)
    assert served == [_fresh_vw_probe(tmp_path)]


async def _until_held(engine: Engine, event_id: str) -> HeldRows:
    """The rows the experiment's rebuild holds, once they reach `event_id`'s."""
    for _ in range(GUARD_SECONDS * 1000):
        seq = engine.log.learned_seqs("w", [event_id]).get(event_id)  # once it commits
        rebuild = engine.learner._rebuilds.get("w")
        if seq is not None and rebuild is not None and rebuild.held.up_to_seq >= seq:
            return rebuild.held
        await asyncio.sleep(0.001)
    raise AssertionError(f"{event_id} was never held")


def test_a_rebuild_holds_the_rows_arriving_meanwhile_as_a_range_of_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the rows themselves, which took ~200 bytes each for as long as the rebuild lasted
    (minutes, for a big log); they are read back a batch at a time once it is in place."""
    gate = Gate(monkeypatch)
    monkeypatch.setattr(learner_module, "MAX_BATCH", 8)

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.05)
        await engine.reward("w", "poison", 1e15)  # returns at its commit (interval > 0)
        assert await asyncio.to_thread(gate.started.wait, GUARD_SECONDS)
        for i in range(3):
            await engine.reward("w", f"m{i}", float(i % 2))
        for i in range(40):
            await _event(engine, "w", f"h{i}", 0.02 * i, float(i % 2))
        held = await _until_held(engine, "h39")
        seqs = engine.log.learned_seqs("w", ["poison", "h39"])
        assert held == HeldRows(seqs["poison"] - 1, seqs["h39"])
        gate.opened.set()
        await _handled(engine, "w", 54)
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (53, 1)
        # The replay may have learned them already (they were in the log by then): the held
        # range is still gone through, skipping what the model has.
        for _ in range(GUARD_SECONDS * 1000):
            if "w" not in engine.learner._rebuilds:
                break
            await asyncio.sleep(0.001)
        else:
            raise AssertionError("the held rows were never all learned")

    run(tmp_path, scenario)
    lines = list(iter_dsjson(tmp_path, "w"))
    learned = [json.loads(line)["EventId"] for line in lines if "_skipLearn" not in line]
    assert learned[-43:] == [f"m{i}" for i in range(3)] + [f"h{i}" for i in range(40)]


def test_a_failed_read_of_held_rows_stalls_the_model_and_lets_their_waiters_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a failed read of a batch to learn does: GetExperiment says why, the Rewards waiting
    for their events return, and a restart learns them from the log."""
    gate = Gate(monkeypatch)
    failing = _failing_learned_rows(monkeypatch, on=False)

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.0)
        poison = asyncio.ensure_future(engine.reward("w", "poison", 1e15))
        assert await asyncio.to_thread(gate.started.wait, GUARD_SECONDS)
        held = [asyncio.ensure_future(engine.reward("w", f"m{i}", float(i % 2))) for i in range(3)]
        await _until_held(engine, "m2")
        failing["on"] = True
        gate.opened.set()
        await asyncio.wait_for(asyncio.gather(poison, *held), GUARD_SECONDS)
        status = engine.get_experiment("w")
        assert status.learning_stalled
        assert "reading events to learn failed" in status.stall_reason
        failing["on"] = False

    run(tmp_path, scenario)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert (status.learned_events, status.unlearnable_events) == (13, 1)
        assert not status.learning_stalled

    run(tmp_path, after_restart)


def test_deleting_an_experiment_while_its_held_rows_are_learned_lets_their_waiters_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of held rows read after the delete finds none, and so hands none of their
    Rewards on: the delete lets every waiter of the experiment go (found by review)."""
    gate = Gate(monkeypatch)
    monkeypatch.setattr(learner_module, "MAX_BATCH", 1)
    draining, deleted = threading.Event(), threading.Event()
    real = learner_module.Learner._learn_held

    def learn_held(self: learner_module.Learner, everything: bool) -> None:
        rebuild = self._rebuilds.get("w")
        if rebuild is not None and rebuild.draining and not deleted.is_set():
            draining.set()
            assert deleted.wait(GUARD_SECONDS)
        real(self, everything)

    monkeypatch.setattr(learner_module.Learner, "_learn_held", learn_held)

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.0)
        poison = asyncio.ensure_future(engine.reward("w", "poison", 1e15))
        assert await asyncio.to_thread(gate.started.wait, GUARD_SECONDS)
        held = [asyncio.ensure_future(engine.reward("w", f"m{i}", float(i % 2))) for i in range(3)]
        await _until_held(engine, "m2")
        gate.opened.set()
        assert await asyncio.to_thread(draining.wait, GUARD_SECONDS)
        deleting = asyncio.ensure_future(engine.delete_experiment("w"))
        for _ in range(GUARD_SECONDS * 1000):  # until the delete has committed
            if not engine.log.learned_rows("w", 0, 10**9):
                break
            await asyncio.sleep(0.001)
        deleted.set()
        await asyncio.wait_for(deleting, GUARD_SECONDS)
        await asyncio.wait_for(asyncio.gather(poison, *held), GUARD_SECONDS)

    run(tmp_path, scenario)
