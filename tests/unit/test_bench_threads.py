"""The benchmark's CPU-by-thread accounting (bandit_server/bench/threads.py)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from bandit_server.bench import threads


def test_thread_cpu_reads_every_thread_of_the_process() -> None:
    done = threading.Event()
    worker = threading.Thread(target=done.wait, name="learner")
    worker.start()
    try:
        cpu = threads.thread_cpu(os.getpid())
        assert threading.get_native_id() in cpu
        assert worker.native_id in cpu
        assert all(seconds >= 0 for seconds in cpu.values())
    finally:
        done.set()
        worker.join()


def test_cpu_is_grouped_by_role_and_unnamed_threads_are_grpc_core() -> None:
    names = {1: "MainThread", 2: "log-writer", 3: "learner", 4: "Thread-1 (_poll_wrapper)",
             5: "log-read_0"}  # fmt: skip
    before = {1: 1.0, 2: 0.5, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0}
    after = {1: 1.5, 2: 0.75, 3: 0.25, 4: 0.125, 5: 0.0625, 6: 2.0, 7: 1.0}  # 7 started since
    assert threads.by_role(before, after, names) == {
        "event loop": 0.5,
        "log writer": 0.25,
        "learner": 0.25,
        "gRPC poller": 0.125,
        "gRPC core": 3.0,
        "other": 0.0625,
    }


def test_the_server_writes_its_threads_names(tmp_path: Path) -> None:
    async def scenario() -> dict[int, str]:
        task = asyncio.create_task(threads.write_names_forever(tmp_path / "data"))
        await asyncio.sleep(0.01)
        task.cancel()
        return threads.read_names(tmp_path / "data")

    names = asyncio.run(scenario())
    assert names[threading.get_native_id()] == "MainThread"
    assert threads.read_names(tmp_path / "missing") == {}
