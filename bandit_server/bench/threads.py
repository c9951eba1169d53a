"""The benchmark server's CPU time by thread: which of its threads a request's CPU goes to.

The server writes the names of its Python threads to a file (`write_names_forever`); the
benchmark reads every thread's CPU time from /proc and groups it by role. Of the threads that
are not Python's, gRPC core names its own (event_engine, grpc_global_timer, ...); the others
keep the process's name (numpy's OpenBLAS threads) and count as "other".
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

NAMES_FILE = "bench-threads.json"
ROLES = ("event loop", "log writer", "learner", "gRPC poller", "gRPC core", "other")


@dataclass(frozen=True, slots=True)
class ThreadTime:
    tid: int
    comm: str  # the kernel's name for it
    seconds: float  # user + system CPU


def _stat(path: Path) -> tuple[str, list[str]]:
    """A /proc stat file: the name in parentheses (it may hold spaces), and the fields after."""
    head, fields = path.read_text().rsplit(")", 1)
    return head.split("(", 1)[1], fields.split()


def _cpu_seconds(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # user + system


def process_cpu(pid: int) -> float:
    """CPU seconds of process `pid`, all its threads, those that ended too."""
    return _cpu_seconds(_stat(Path(f"/proc/{pid}/stat"))[1])


def thread_cpu(pid: int) -> dict[tuple[int, int], ThreadTime]:
    """Each thread of process `pid`, keyed by (thread id, start time): the kernel may give a
    new thread the id of one that ended."""
    threads: dict[tuple[int, int], ThreadTime] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm, fields = _stat(task / "stat")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        tid = int(task.name)
        threads[tid, int(fields[19])] = ThreadTime(tid, comm, _cpu_seconds(fields))
    return threads


def role(name: str | None, comm: str) -> str:
    """`name`: the Python thread's name, None for a thread Python did not start."""
    if name is None:
        return "other" if comm.startswith("python") else "gRPC core"
    if name == "MainThread":
        return "event loop"
    if name in ("log-writer", "learner"):
        return name.replace("-", " ")
    if "_poll_wrapper" in name:
        return "gRPC poller"
    return "other"


def by_role(
    before: dict[tuple[int, int], ThreadTime],
    after: dict[tuple[int, int], ThreadTime],
    names: dict[int, str],
) -> dict[str, float]:
    """CPU seconds the threads alive at `after` spent since `before`, by role (a thread that
    started meanwhile counts whole; one that ended is not there)."""
    spent = dict.fromkeys(ROLES, 0.0)
    for key, thread in after.items():
        earlier = before.get(key)
        used = thread.seconds - (earlier.seconds if earlier is not None else 0.0)
        spent[role(names.get(thread.tid), thread.comm)] += used
    return spent


def read_names(data_dir: Path) -> dict[int, str]:
    """The names the server wrote, by thread id; raises if it wrote none."""
    path = data_dir / NAMES_FILE
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise RuntimeError(
            f"the bench server wrote no thread names to {path}: is it bench.server?"
        ) from None
    return {int(tid): name for tid, name in names.items()}


async def write_names_forever(data_dir: Path) -> None:
    """Keep `NAMES_FILE` up to date with the process's Python threads (some start lazily)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path, scratch = data_dir / NAMES_FILE, data_dir / f"{NAMES_FILE}.tmp"
    while True:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        scratch.write_text(json.dumps(names))
        scratch.replace(path)  # a reader never sees half a file
        await asyncio.sleep(0.5)
