"""The benchmark's CPU-by-thread accounting (bandit_server/bench/threads.py)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from bandit_server.bench import threads
from bandit_server.bench.threads import ThreadTime


def test_thread_cpu_reads_every_thread_of_the_process() -> None:
    done = threading.Event()
    worker = threading.Thread(target=done.wait, name="learner")
    worker.start()
    try:
        found = threads.thread_cpu(os.getpid())
        tids = {thread.tid for thread in found.values()}
        assert {threading.get_native_id(), worker.native_id} <= tids
        assert all(thread.seconds >= 0 and thread.comm for thread in found.values())
        assert threads.process_cpu(os.getpid()) >= max(t.seconds for t in found.values())
    finally:
        done.set()
        worker.join()


def _times(*threads_: tuple[int, int, str, float]) -> dict[tuple[int, int], ThreadTime]:
    return {(tid, start): ThreadTime(tid, comm, s) for tid, start, comm, s in threads_}


def test_cpu_is_grouped_by_role() -> None:
    names = {1: "MainThread", 2: "log-writer", 3: "learner", 4: "Thread-1 (_poll_wrapper)",
             5: "log-read_0"}  # fmt: skip
    before = _times((1, 0, "python", 1.0), (2, 0, "python", 0.5), (3, 0, "python", 0.0),
                    (6, 0, "event_engine", 0.25), (9, 0, "python", 0.5))  # fmt: skip
    after = _times((1, 0, "python", 1.5), (2, 0, "python", 0.75), (3, 0, "python", 0.25),
                   (4, 0, "python", 0.125), (5, 0, "python", 0.0625),
                   (6, 0, "event_engine", 2.25),  # gRPC core names its threads
                   (7, 0, "grpc_global_tim", 1.0),  # started since: counts whole
                   (8, 0, "python", 0.5),  # not Python's, kept the process's name (OpenBLAS)
                   (9, 5, "python", 0.125))  # fmt: skip  # an id reused: another thread
    assert threads.by_role(before, after, names) == {
        "event loop": 0.5,
        "log writer": 0.25,
        "learner": 0.25,
        "gRPC poller": 0.125,
        "gRPC core": 3.0,
        "other": 0.0625 + 0.5 + 0.125,
    }


def test_the_server_writes_its_threads_names(tmp_path: Path) -> None:
    async def scenario() -> dict[int, str]:
        task = asyncio.create_task(threads.write_names_forever(tmp_path / "data"))
        await asyncio.sleep(0.01)
        task.cancel()
        return threads.read_names(tmp_path / "data")

    names = asyncio.run(scenario())
    assert names[threading.get_native_id()] == "MainThread"


def test_a_server_that_wrote_no_names_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="wrote no thread names"):
        threads.read_names(tmp_path)
