"""The benchmark server's CPU time by thread: which of its threads a request's CPU goes to.

The server writes the names of its Python threads to a file (`write_names`); the benchmark
reads every thread's CPU time from /proc and groups it by role. Threads that are not Python's
are gRPC core's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

NAMES_FILE = "bench-threads.json"
ROLES = ("event loop", "log writer", "learner", "gRPC poller", "gRPC core", "other")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process `pid`, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        cpu[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return cpu


def role(name: str | None) -> str:
    if name is None:
        return "gRPC core"
    if name == "MainThread":
        return "event loop"
    if name in ("log-writer", "learner"):
        return name.replace("-", " ")
    if "_poll_wrapper" in name:
        return "gRPC poller"
    return "other"


def by_role(
    before: dict[int, float], after: dict[int, float], names: dict[int, str]
) -> dict[str, float]:
    """CPU seconds spent between the two readings, by role."""
    spent = dict.fromkeys(ROLES, 0.0)
    for tid, seconds in after.items():
        spent[role(names.get(tid))] += seconds - before.get(tid, 0.0)
    return spent


def read_names(data_dir: Path) -> dict[int, str]:
    try:
        names = json.loads((data_dir / NAMES_FILE).read_text())
    except FileNotFoundError:
        return {}
    return {int(tid): name for tid, name in names.items()}


async def write_names_forever(data_dir: Path) -> None:
    """Keep `NAMES_FILE` up to date with the process's Python threads (some start lazily)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path, scratch = data_dir / NAMES_FILE, data_dir / f"{NAMES_FILE}.tmp"
    while True:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        scratch.write_text(json.dumps(names))
        scratch.replace(path)
        await asyncio.sleep(0.5)
