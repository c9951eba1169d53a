"""RebuildModel: the model rebuilt from the log without the events an operator skips, as a
restart would rebuild it; and the way out of a stalled model, which before needed a change of
vw_args or a new experiment."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import grpc
import pytest

from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.engine.engine import Engine
from bandit_server.engine.recovery import CASCADE, NOT_RECORDED
from bandit_server.errors import Unavailable
from bandit_server.export import iter_dsjson
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.storage.sqlite_log import SQLiteDecisionLog
from bandit_server.storage.sqlite_schema import SKIPPED_ON_REQUEST
from tests.server import ServerThread
from tests.test_rebuild_off_learner import GUARD_SECONDS, Gate, _setup
from tests.test_reward_windows import Clock, run
from tests.test_unlearnable_events import (
    VW_ARGS,
    _checkpoint,
    _engine_event,
    _expected,
    _learned,
    _probe,
    _rank,
    _served,
    _status,
    _traffic,
)


def _create(server: ServerThread, interval: float) -> None:
    server.experiments.CreateExperiment(
        pb.CreateExperimentRequest(
            experiment=pb.Experiment(
                name="f", vw_args=VW_ARGS, model_update_interval_seconds=interval
            )
        )
    )


def _learned_ids(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "decisions.sqlite3") as con:
        return [r[0] for r in con.execute("SELECT event_id FROM learned ORDER BY seq")]


def _checkpoints(data_dir: Path, experiment: str = "w") -> list[Path]:
    """The experiment's checkpoint sidecars on disk."""
    return list((data_dir / "models" / experiment).glob("*.json"))


async def _events(engine: Engine, prefix: str, n: int, learned: int) -> None:
    """`n` ordinary events, rewarded at once; returns once `learned` were handled."""
    for i in range(n):
        await _engine_event(engine, f"{prefix}{i}", 0.1 * i, float(i % 2))
    await _learned(engine, learned)


async def _create_engine_experiment(engine: Engine) -> None:
    await engine.create_experiment(
        ExperimentConfig("w", VW_ARGS, 10.0, 0.0, Aggregation.EARLIEST, 0.0)
    )


@pytest.mark.parametrize("interval", [0.0, 0.05])
def test_skipped_events_leave_the_model_now_and_after_a_restart(
    tmp_path: Path, interval: float
) -> None:
    """The rebuilt model is a fresh VW trained on the export's learned lines, where the skipped
    events are now _skipLearn; the checkpoint taken after them is gone, and a restart
    rebuilds the same model."""
    data_dir = tmp_path / "data"
    server = ServerThread(data_dir).start()
    try:
        _create(server, interval)
        _traffic(server, 30, seed=1)
        _status(server, 30)
        assert server.app is not None
        learner = server.app.engine.learner
        learner.call(learner.checkpoint_all)  # holds every event, the skipped ones too
        skipped = [_learned_ids(data_dir)[i] for i in (3, 17)]
        status = server.experiments.RebuildModel(
            pb.RebuildModelRequest(name="f", skip_event_ids=skipped)
        )
        assert (status.learned_events, status.unlearnable_events) == (28, 2)
        assert not status.learning_stalled and status.stalled_event_id == ""
        assert not _checkpoints(data_dir, "f")  # it held them
        _traffic(server, 10, seed=2)  # learning goes on after the rebuild
        _status(server, 40)
        served = _served(server)
    finally:
        server.stop()
    lines, expected = _expected(data_dir)
    learned = set(_learned_ids(data_dir))  # the probes are ranked, never rewarded: not learned
    marked = [json.loads(line)["EventId"] for line in lines if json.loads(line).get("_skipLearn")]
    assert [event_id for event_id in marked if event_id in learned] == skipped
    if interval == 0:  # otherwise Rank serves a snapshot, which may not hold the last events
        assert served == expected
    with sqlite3.connect(data_dir / "decisions.sqlite3") as con:
        reasons = {r[0] for r in con.execute("SELECT reason FROM unlearnable")}
    assert reasons == {SKIPPED_ON_REQUEST}

    server = ServerThread(data_dir).start()
    try:
        status = _status(server, 40)
        assert (status.learned_events, status.unlearnable_events) == (38, 2)
        assert _served(server) == expected
    finally:
        server.stop()


def test_a_stalled_model_learns_on_once_its_culprit_is_skipped(tmp_path: Path) -> None:
    """Under --pistol an extreme event leaves the model fragile and learning stalls two
    events later, for good: a restart stalls at the same place. GetExperiment says why and
    names the event it stalled before; skipping the extreme event, the real culprit, forgets
    the two it broke (they learn fine without it) and learns on."""
    vw_args = "--cb_explore_adf --pistol --squarecb"

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(
            ExperimentConfig("w", vw_args, 10.0, 0.0, Aggregation.EARLIEST, 0.0)
        )
        for i in range(50):
            await _engine_event(engine, f"n{i}", 0.1 * (i % 7), float(i % 2))
        await _engine_event(engine, "extreme", 1e5, 1e10)
        for i in range(5):
            await _engine_event(engine, f"m{i}", 0.1 * (i % 7), float(i % 2))
        status = engine.get_experiment("w")
        assert status.learning_stalled and status.stall_reason == CASCADE
        assert status.stalled_event_id == "m2"  # m0 and m1 broke it and were skipped
        assert status.unlearnable_events == 2

        status = await engine.rebuild_model("w", ["extreme"])
        assert not status.learning_stalled and status.stalled_event_id == ""
        assert status.stall_reason == ""
        assert (status.learned_events, status.unlearnable_events) == (55, 1)
        for i in range(5, 8):
            await _engine_event(engine, f"m{i}", 0.1 * (i % 7), float(i % 2))
        await _learned(engine, 59)
        assert not engine.get_experiment("w").learning_stalled
        probes.append(await _probe(engine, "probe-1"))

    probes: list[tuple[tuple[str, float], ...]] = []
    run(tmp_path, scenario)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        status = engine.get_experiment("w")
        assert not status.learning_stalled
        assert (status.learned_events, status.unlearnable_events) == (58, 1)
        assert await _probe(engine, "probe-2") == probes[0]

    run(tmp_path, after_restart)


def test_a_stall_that_a_restart_would_clear_is_cleared_without_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mark that could not be written (a locked or full disk) stalls learning before the
    event; once it can be, a rebuild with nothing to skip does what a restart would."""

    def locked(*args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _create_engine_experiment(engine)
        await _events(engine, "n", 10, learned=10)
        monkeypatch.setattr(SQLiteDecisionLog, "mark_unlearnable", locked)
        await _engine_event(engine, "poison", 1e10, 1e15)
        await _learned(engine, 11)
        status = engine.get_experiment("w")
        assert status.learning_stalled and status.stalled_event_id == "poison"
        assert status.stall_reason == NOT_RECORDED
        monkeypatch.undo()

        status = await engine.rebuild_model("w", [])
        assert not status.learning_stalled
        assert (status.learned_events, status.unlearnable_events) == (10, 1)
        await _engine_event(engine, "after", 0.5, 1.0)
        await _learned(engine, 12)
        assert engine.get_experiment("w").learned_events == 11

    run(tmp_path, scenario)


def test_skipping_drops_the_checkpoints_that_hold_the_events(tmp_path: Path) -> None:
    """Checkpoints from the first skipped event on are gone before the marks are written, and
    the old model writes no more: a restart must never restore the events from one."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _create_engine_experiment(engine)
        await _events(engine, "a", 5, learned=5)
        await _checkpoint(engine)
        await _events(engine, "b", 5, learned=10)
        await _checkpoint(engine)
        seqs = sorted(int(p.stem) for p in _checkpoints(tmp_path))
        assert len(seqs) == 2
        old = engine.model("w")
        # The first checkpoint holds a4 as its last event: it must go too.
        await engine.rebuild_model("w", ["b3", "a4"])
        assert old.outdated and engine.model("w") is not old
        assert not _checkpoints(tmp_path)

    run(tmp_path, scenario)


def test_bad_requests_name_the_field_and_change_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerThread(data_dir).start()
    try:
        _create(server, 0.0)
        _traffic(server, 5, seed=1)
        _status(server, 5)
        open_event = _rank(server, 0.5).event_id  # ranked, never rewarded: window open
        cases = [
            (pb.RebuildModelRequest(name="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
            (pb.RebuildModelRequest(name="bad name!"), grpc.StatusCode.INVALID_ARGUMENT, "name"),
            (
                pb.RebuildModelRequest(name="f", skip_event_ids=["missing"]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "skip_event_ids[0]: 'missing' is not a learned event",
            ),
            (
                pb.RebuildModelRequest(name="f", skip_event_ids=[open_event]),
                grpc.StatusCode.INVALID_ARGUMENT,
                f"skip_event_ids[0]: {open_event!r} is not a learned event",
            ),
            (
                pb.RebuildModelRequest(name="f", skip_event_ids=["x", ""]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "skip_event_ids[1]: is empty",
            ),
            (
                pb.RebuildModelRequest(name="f", skip_event_ids=["x", "y", "x"]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "skip_event_ids[2]: 'x' repeats skip_event_ids[0]",
            ),
            (
                pb.RebuildModelRequest(name="f", skip_event_ids=[f"e{i}" for i in range(1001)]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "skip_event_ids: 1001 ids, more than 1,000",
            ),
        ]
        for request, code, text in cases:
            with pytest.raises(grpc.RpcError) as raised:
                server.experiments.RebuildModel(request)
            assert raised.value.code() == code, request
            assert text in (raised.value.details() or ""), raised.value.details()
        status = server.experiments.GetExperiment(pb.GetExperimentRequest(name="f"))
        assert (status.learned_events, status.unlearnable_events) == (5, 0)
    finally:
        server.stop()


def test_an_outdated_model_writes_no_checkpoint(tmp_path: Path) -> None:
    """Between the marks and the swap, the old model still learns; a checkpoint of it would
    bring the skipped events back at the next restart."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _create_engine_experiment(engine)
        await _events(engine, "a", 3, learned=3)
        engine.model("w").outdated = True
        await _checkpoint(engine)
        assert not _checkpoints(tmp_path)
        engine.model("w").outdated = False
        await _checkpoint(engine)
        assert len(_checkpoints(tmp_path)) == 1

    run(tmp_path, scenario)


def test_events_that_cannot_be_recorded_as_skipped_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model keeps learning and checkpointing as before (the checkpoints removed first
    were right, and are only missed by a restart's replay)."""

    def full(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _create_engine_experiment(engine)
        await _events(engine, "a", 3, learned=3)
        monkeypatch.setattr(SQLiteDecisionLog, "mark_skipped", full)
        with pytest.raises(Unavailable, match=r"could not be recorded.*disk is full"):
            await engine.rebuild_model("w", ["a1"])
        monkeypatch.undo()
        assert not engine.model("w").outdated
        assert engine.get_experiment("w").unlearnable_events == 0
        await _events(engine, "b", 2, learned=5)
        await _checkpoint(engine)
        assert len(_checkpoints(tmp_path)) == 1

    run(tmp_path, scenario)


def test_skipping_waits_for_a_rebuild_after_a_breaking_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """That rebuild writes and reads marks of its own, so skipping meanwhile would race it
    (found by review): it answers UNAVAILABLE and changes nothing; once the rebuild is done
    it skips."""
    gate = Gate(monkeypatch)

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _setup(engine, 0.05)
        await engine.reward("w", "poison", 1e15)  # learned on the learner thread: breaks it
        assert await asyncio.to_thread(gate.started.wait, GUARD_SECONDS)
        with pytest.raises(Unavailable, match="being rebuilt"):
            await engine.rebuild_model("w", ["n3"])
        assert not engine.model("w").outdated
        assert engine.get_experiment("w").unlearnable_events == 0  # the rebuild marks it
        gate.opened.set()
        for _ in range(2_000):  # a bound, not a timing: until the learner installed it
            try:
                status = await engine.rebuild_model("w", ["n3"])
                break
            except Unavailable:
                await asyncio.sleep(0.005)
        else:
            raise AssertionError("the rebuild never ended")
        assert (status.learned_events, status.unlearnable_events) == (9, 2)

    run(tmp_path, scenario)


def test_skipped_events_stay_out_under_other_vw_args(tmp_path: Path) -> None:
    """Marks that VW's behaviour decides hold for the vw_args they were found under; a skip on
    request holds for every vw_args: a retrain for new ones must not learn the bots again."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _create_engine_experiment(engine)
        await _events(engine, "a", 6, learned=6)
        await engine.rebuild_model("w", ["a1", "a4"])
        other = ExperimentConfig("w", "--cb_explore_adf --squarecb", 10.0, 0.0)
        status = await engine.update_experiment(other)
        assert (status.learned_events, status.unlearnable_events) == (4, 2)

    run(tmp_path, scenario)
    lines = [json.loads(line) for line in iter_dsjson(tmp_path, "w")]
    assert {line["EventId"] for line in lines if line.get("_skipLearn")} == {"a1", "a4"}


def test_a_model_rebuilt_without_events_has_a_version_of_its_own(tmp_path: Path) -> None:
    """Skipping an event learned before others brings the count back to one an earlier,
    different model had: the version must still change (and stay the same after a restart)."""
    versions: list[str] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await _create_engine_experiment(engine)
        for i in range(5):
            await _engine_event(engine, f"e{i}", 0.1 * i, float(i % 2))
            await _learned(engine, i + 1)
            versions.append(engine.get_experiment("w").model_version)
        status = await engine.rebuild_model("w", ["e1"])
        assert status.learned_events == 4
        assert status.model_version not in versions
        versions.append(status.model_version)

    run(tmp_path, scenario)

    async def after_restart(engine: Engine, clock: Clock) -> None:
        assert engine.get_experiment("w").model_version == versions[-1]

    run(tmp_path, after_restart)
