"""One server per data directory: an exclusive lock on a file in it, held while serving.

Two servers on one log would each keep their own models, open windows and learned-row
sequence, and one would fail the other's writes. The kernel drops the lock when the process
ends, `kill -9` included, so a crash never leaves a directory locked. Readers (export, the
offline tools) do not take it: they may run beside a server.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bandit_server.errors import CannotStart

LOCK_FILE = "server.lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise CannotStart naming the directory (and the holder's pid)."""
        data_dir = self.path.parent
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CannotStart(
                f"--data-dir {str(data_dir)!r} cannot be used: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CannotStart(
                f"--data-dir {str(data_dir)!r} is in use by another server (pid {holder}); "
                "one server per data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
