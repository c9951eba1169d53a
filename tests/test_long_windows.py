"""Reward windows longer than the horizon (up to 30 days) stay in the log, not in memory, until
their end nears or an input arrives for them, and still close exactly as short ones do."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.engine import engine as engine_module
from bandit_server.engine import recovery
from bandit_server.engine.engine import HORIZON_SECONDS, Engine
from bandit_server.errors import InvalidArgument, Unavailable
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from tests.server import ServerThread, actions_pb
from tests.test_reward_windows import Clock, costs, rank, run

WEEK = 7 * 24 * 3600.0


def week_config(aggregation: Aggregation, default_reward: float = 0.25) -> ExperimentConfig:
    return ExperimentConfig(
        "w", "--cb_explore_adf --epsilon 0.2", WEEK, default_reward, aggregation
    )


def held(engine: Engine) -> set[str]:
    return set(engine._runtimes["w"].open)


def slow_commits(engine: Engine) -> Callable[[], None]:
    """Commits take 50 ms (a busy writer thread), until the returned function is called."""
    real = engine._commit

    def slow_commit(rows: list[object], *args: object, **kwargs: object) -> object:
        async def later() -> object:
            await asyncio.sleep(0.05)
            return await real(rows, *args, **kwargs)  # type: ignore[arg-type]

        return asyncio.ensure_future(later())

    engine._commit = slow_commit  # type: ignore[method-assign,assignment]

    def restore() -> None:
        engine._commit = real  # type: ignore[method-assign]

    return restore


class FailingReads:
    """Makes the reads of windows entering the horizon fail, between start() and stop()."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def start(self) -> None:
        def failing(*args: object) -> object:
            raise OSError("disk I/O error")

        self._monkeypatch.setattr(engine_module, "open_events", failing)

    def stop(self) -> None:
        self._monkeypatch.setattr(engine_module, "open_events", recovery.open_events)


async def until_held(engine: Engine, event_id: str) -> None:
    for _ in range(10_000):  # a bound against hanging, never reached when the code is right
        if event_id in held(engine):
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{event_id} was never held")


async def close_all(engine: Engine) -> None:
    await engine.load_due_windows()
    await engine.close_due_windows()


async def _week_of_events(engine: Engine, clock: Clock) -> None:
    """Five events a week long: untouched, rewarded twice, deferred then activated, deferred
    never activated, rewarded late."""
    for event_id in ("quiet", "rewarded", "late"):
        await rank(engine, event_id)
    await rank(engine, "activated", deferred=True)
    await rank(engine, "never", deferred=True)
    assert held(engine) == set()  # a week away: only in the log
    clock.now += 3600
    assert await engine.reward("w", "rewarded", 0.5) is False  # read in, applied, given back
    await engine.activate("w", "activated")
    assert held(engine) == set()


def test_long_windows_close_as_short_ones_do_without_being_held(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await _week_of_events(engine, clock)
        clock.now += 3600
        await engine.reward("w", "rewarded", 0.25)  # summed with the first
        await close_all(engine)
        assert costs(engine) == {}
        clock.now = clock.now - 2 * 3600 + WEEK - HORIZON_SECONDS / 2  # the ends are near
        await engine.load_due_windows()
        assert held(engine) == {"quiet", "rewarded", "late", "activated", "never"}
        clock.now += HORIZON_SECONDS  # past every deadline
        assert await engine.reward("w", "late", 9.0) is True
        await close_all(engine)
        assert costs(engine) == {"quiet": -0.25, "rewarded": -0.75, "late": -0.25,
                                 "activated": -0.25}  # fmt: skip
        assert held(engine) == set()

    run(tmp_path, scenario)


def test_after_a_restart_long_windows_keep_their_inputs(
    tmp_path: Path,
) -> None:
    async def before(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await _week_of_events(engine, clock)

    async def after(engine: Engine, clock: Clock) -> None:
        assert held(engine) == set()
        await engine.reward("w", "rewarded", 0.25)
        clock.now += WEEK
        await close_all(engine)
        assert costs(engine) == {"quiet": -0.25, "rewarded": -0.75, "late": -0.25,
                                 "activated": -0.25}  # fmt: skip

    run(tmp_path, before)
    run(tmp_path, after)


def test_earliest_learns_a_long_windows_first_reward_at_once(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.EARLIEST))
        await rank(engine, "e1")
        assert await engine.reward("w", "e1", 0.7) is False
        assert costs(engine) == {"e1": -0.7}
        clock.now += WEEK + 1
        await close_all(engine)
        assert costs(engine) == {"e1": -0.7}

    run(tmp_path, scenario)


async def _long_then_short(
    engine: Engine, clock: Clock, reads: FailingReads, long_id: str
) -> float:
    """A week-long window `long_id`; then reads fail, windows become 600 s long, and "short"
    is ranked to close 300 s after it. Returns the long window's deadline."""
    await engine.create_experiment(week_config(Aggregation.SUM))
    await rank(engine, long_id)
    deadline = clock.now + WEEK
    reads.start()
    await engine.update_experiment(
        dataclasses.replace(week_config(Aggregation.SUM), reward_wait_seconds=600.0)
    )
    clock.now = deadline - 300
    await rank(engine, "short")
    return deadline


def test_a_failed_read_keeps_the_watermark_below_the_windows_it_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short window closing after a long one that a failed read missed must not carry the
    watermark past it: a restart reopens the long one."""
    reads = FailingReads(monkeypatch)

    async def before(engine: Engine, clock: Clock) -> None:
        far_deadline = await _long_then_short(engine, clock, reads, "far")
        clock.now = far_deadline + 400
        await close_all(engine)  # "short" closes; the read that would bring "far" in fails
        assert costs(engine) == {"short": -0.25}
        await engine._save_watermarks()
        assert engine.log.closed_until("w") < far_deadline

    async def after(engine: Engine, clock: Clock) -> None:
        clock.now += WEEK + 1
        await close_all(engine)
        assert costs(engine) == {"short": -0.25, "far": -0.25}

    run(tmp_path, before)
    reads.stop()
    run(tmp_path, after)


def test_short_windows_are_held_at_once(tmp_path: Path) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        short = dataclasses.replace(week_config(Aggregation.SUM), reward_wait_seconds=600.0)
        await engine.create_experiment(short)
        await rank(engine, "e1")
        assert held(engine) == {"e1"}

    run(tmp_path, scenario)


def test_a_window_read_in_while_its_rank_is_retried_is_held(tmp_path: Path) -> None:
    """A repeated Rank for an event whose window the loader reads in is a duplicate that never
    registers: the loader must hold the window anyway (found by review: it was skipped, never
    learned, and the watermark passed it)."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await rank(engine, "e1")
        deadline = clock.now + WEEK
        clock.now = deadline - HORIZON_SECONDS + 1  # its end enters the horizon
        restore = slow_commits(engine)
        retried = asyncio.ensure_future(rank(engine, "e1"))  # a client retries the Rank
        await asyncio.sleep(0)
        await engine.load_due_windows()
        await retried
        restore()
        assert held(engine) == {"e1"}
        clock.now = deadline + 1
        await close_all(engine)
        assert costs(engine) == {"e1": -0.25}

    run(tmp_path, scenario)


def test_an_input_racing_the_close_of_its_window_does_not_learn_it_twice(tmp_path: Path) -> None:
    """An input that reads a window back from the log while its close is committing must find
    it learned (found by review: it was learned again, and the duplicate learned row failed
    every later close)."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await rank(engine, "e1")
        deadline = clock.now + WEEK
        await engine.reward("w", "e1", 0.75)
        clock.now = deadline  # the close and the input read the same instant
        await engine.load_due_windows()
        restore = slow_commits(engine)
        closing = asyncio.ensure_future(engine.close_due_windows())
        await asyncio.sleep(0)  # the close's commit is in flight
        restore()
        assert await engine.reward("w", "e1", 1.0) is False
        await closing
        clock.now += 1
        await close_all(engine)
        assert costs(engine) == {"e1": -0.75}
        await rank(engine, "e2")  # later windows still close
        clock.now += WEEK + 1
        await close_all(engine)
        assert costs(engine) == {"e1": -0.75, "e2": -0.25}

    run(tmp_path, scenario)


def test_short_windows_do_not_wait_for_a_failing_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = FailingReads(monkeypatch)

    async def scenario(engine: Engine, clock: Clock) -> None:
        short = dataclasses.replace(week_config(Aggregation.SUM), reward_wait_seconds=600.0)
        await engine.create_experiment(short)
        reads.start()
        clock.now += 2 * HORIZON_SECONDS
        await engine.load_due_windows()
        await rank(engine, "e1")
        clock.now += 601
        await close_all(engine)
        assert costs(engine) == {"e1": -0.25}

    run(tmp_path, scenario)


def test_a_window_the_loader_reaches_while_its_input_commits_is_held_and_closed(
    tmp_path: Path,
) -> None:
    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await rank(engine, "e1")
        deadline = clock.now + WEEK
        clock.now = deadline - HORIZON_SECONDS - 100
        await engine.load_due_windows()
        assert held(engine) == set()
        restore = slow_commits(engine)
        rewarded = asyncio.ensure_future(engine.reward("w", "e1", 0.5))
        await until_held(engine, "e1")  # read from the log; its input is committing
        clock.now += 200  # its end enters the horizon while the reward commits
        await engine.load_due_windows()  # skips it: the reward holds it
        await rewarded
        restore()
        assert held(engine) == {"e1"}
        clock.now = deadline + 1
        await close_all(engine)
        assert costs(engine) == {"e1": -0.5}

    run(tmp_path, scenario)


def test_a_refused_input_gives_the_window_back(tmp_path: Path) -> None:
    """A sum past the limit is refused; the window read in for it must not stay held without
    ever closing (found by review: it stayed, and a restart lost it)."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await rank(engine, "e1")
        await engine.reward("w", "e1", 1e15)
        with pytest.raises(InvalidArgument):
            await engine.reward("w", "e1", 1e15)
        assert held(engine) == set()
        clock.now += WEEK + 1
        await close_all(engine)
        assert costs(engine) == {"e1": -1e15}

    run(tmp_path, scenario)


def test_the_watermark_does_not_pass_a_window_whose_input_is_committing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = FailingReads(monkeypatch)

    async def before(engine: Engine, clock: Clock) -> None:
        deadline = await _long_then_short(engine, clock, reads, "x")
        restore = slow_commits(engine)
        rewarded = asyncio.ensure_future(engine.reward("w", "x", 0.5))
        await until_held(engine, "x")  # read from the log; its input is committing
        restore()
        reads.stop()
        clock.now = deadline + 400
        await close_all(engine)  # "short" closes; "x" is held by its reward, not closed
        assert costs(engine) == {"short": -0.25}
        await engine._save_watermarks()
        assert engine.log.closed_until("w") < deadline
        await rewarded

    async def after(engine: Engine, clock: Clock) -> None:
        clock.now += WEEK + 1
        await close_all(engine)
        assert costs(engine) == {"short": -0.25, "x": -0.5}

    run(tmp_path, before)
    run(tmp_path, after)


def test_over_grpc_long_windows_learn_their_rewards_across_a_restart(tmp_path: Path) -> None:
    """From a client's side: week-long windows take rewards and activations, learn them as the
    aggregation says, and count a reward once, before and after a restart."""
    actions = actions_pb(
        [{"id": f"a{i}", "features": {"Action": {"k": f"k{i}"}}} for i in range(3)]
    )
    server = ServerThread(tmp_path / "data").start()
    try:
        server.experiments.CreateExperiment(
            pb.CreateExperimentRequest(
                experiment=pb.Experiment(name="wk", reward_wait_seconds=WEEK)
            )
        )
        for event_id in ("e1", "e2"):
            server.bandit.Rank(pb.RankRequest(experiment="wk", event_id=event_id, actions=actions))
        server.bandit.Rank(
            pb.RankRequest(experiment="wk", event_id="d1", actions=actions, defer_activation=True)
        )
        assert not server.bandit.Reward(
            pb.RewardRequest(experiment="wk", event_id="e1", value=1)
        ).late
        assert (
            server.experiments.GetExperiment(pb.GetExperimentRequest(name="wk")).learned_events == 1
        )
    finally:
        server.stop()
    server = ServerThread(tmp_path / "data").start()
    try:
        again = server.bandit.Reward(pb.RewardRequest(experiment="wk", event_id="e1", value=1))
        assert not again.late  # in its window, and not learned twice
        server.bandit.Reward(pb.RewardRequest(experiment="wk", event_id="d1", value=0.5))
        assert (
            server.experiments.GetExperiment(pb.GetExperimentRequest(name="wk")).learned_events == 1
        )
        server.bandit.Activate(pb.ActivateRequest(experiment="wk", event_id="d1"))
        status = server.experiments.GetExperiment(pb.GetExperimentRequest(name="wk"))
        assert status.learned_events == 2  # the deferred event's waiting reward, at activation
        with pytest.raises(grpc.RpcError) as info:
            server.bandit.Reward(pb.RewardRequest(experiment="wk", event_id="nope", value=1))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "data" / "decisions.sqlite3") as db:
        learned = dict(db.execute("SELECT event_id, cost FROM learned"))
    assert learned == {"e1": -1.0, "d1": -0.5}


def test_inputs_racing_for_a_window_in_the_log_learn_it_once(tmp_path: Path) -> None:
    """A second reward for an EARLIEST window being read from the log for a first one waits,
    then reads it with the first learned in it (reading it at the same time, it learned the
    window again, and its commit failed on the duplicate learned row)."""

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.EARLIEST))
        await rank(engine, "e1")
        real = engine._window_from_log
        first_may_return = threading.Event()
        reads: list[str] = []

        def slow_first(experiment: str, event_id: str) -> object:
            reads.append(event_id)
            if len(reads) == 1:
                assert first_may_return.wait(60)
            return real(experiment, event_id)

        engine._window_from_log = slow_first  # type: ignore[method-assign,assignment]
        first = asyncio.ensure_future(engine.reward("w", "e1", 0.5))
        while not reads:
            await asyncio.sleep(0.001)
        second = asyncio.ensure_future(engine.reward("w", "e1", 0.25))
        for _ in range(20):
            await asyncio.sleep(0.001)
        assert reads == ["e1"]  # the second has not read it yet
        first_may_return.set()
        await asyncio.gather(first, second)
        assert len(engine.log.rewards("w", "e1")) == 2
        assert costs(engine) == {"e1": -0.5}
        clock.now += WEEK + 1
        await close_all(engine)
        assert costs(engine) == {"e1": -0.5}

    run(tmp_path, scenario)


def test_stop_waits_for_a_window_read_whose_caller_gave_up(tmp_path: Path) -> None:
    """A reward's read of its window keeps running when the call is cancelled (a client gone,
    the gRPC server's grace over): stop waits for it before closing the log, which the read
    met closed before. A read asked for after that is refused as UNAVAILABLE."""
    outcomes: list[str] = []
    at_close: list[list[str]] = []

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(week_config(Aggregation.SUM))
        await rank(engine, "e1")
        real_read, real_stop, real_close = (
            engine._window_from_log,
            engine.learner.stop,
            engine.log.close,
        )
        started, may_return = threading.Event(), threading.Event()

        def slow_read(experiment: str, event_id: str) -> object:
            started.set()
            assert may_return.wait(60)
            time.sleep(0.2)  # still reading well after everything else stop waits for
            try:
                window = real_read(experiment, event_id)
            except Exception as error:
                outcomes.append(repr(error))
                raise
            outcomes.append(f"read {window is not None}")
            return window

        def learner_stop() -> None:
            real_stop()
            may_return.set()

        def close() -> None:
            at_close.append(list(outcomes))
            real_close()

        engine._window_from_log = slow_read  # type: ignore[method-assign,assignment]
        engine.learner.stop = learner_stop  # type: ignore[method-assign]
        engine.log.close = close  # type: ignore[method-assign]
        reward = asyncio.ensure_future(engine.reward("w", "e1", 0.5))
        for _ in range(10_000):  # a bound against hanging, never reached when the code is right
            if started.is_set():
                break
            await asyncio.sleep(0.001)
        reward.cancel()
        await engine.stop()
        assert at_close == [["read True"]]
        with pytest.raises(Unavailable, match="stopping"):
            await engine.reward("w", "e1", 0.5)

    run(tmp_path, scenario)
