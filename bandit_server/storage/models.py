"""Model checkpoints: the serialized model plus the log position it includes."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A model that has learned every learned-log row of its experiment up to `learned_seq`."""

    experiment: str
    vw_args: str
    learned_seq: int
    learned_count: int
    created_at: float
    model: bytes
    # The experiment's incarnation: a deleted and re-created experiment of the same name has a
    # new learned log, so its old checkpoints must not be used. "" in files written before.
    epoch: str = ""


class ModelStore(Protocol):
    def save(self, checkpoint: Checkpoint) -> None: ...

    def latest(self, experiment: str, epoch: str) -> Checkpoint | None: ...

    def delete(self, experiment: str) -> None: ...

    def discard_after(self, experiment: str, learned_seq: int) -> None: ...

    def discard(self, experiment: str, learned_seq: int) -> None: ...


class DirectoryModelStore:
    """`root/<experiment>/<learned_seq>.vw` with a JSON sidecar; the newest few are kept.

    Files are written to a temporary name, fsynced and renamed, so a crash leaves either the old
    checkpoint or the new one, never a torn file.
    """

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = root
        self.keep = keep
        root.mkdir(parents=True, exist_ok=True)

    def save(self, checkpoint: Checkpoint) -> None:
        folder = self.root / checkpoint.experiment
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{checkpoint.learned_seq:015d}"
        meta = {k: v for k, v in asdict(checkpoint).items() if k != "model"}
        _write_atomically(folder / f"{stem}.vw", checkpoint.model)
        # The sidecar is written last: a checkpoint counts only once its sidecar exists.
        _write_atomically(folder / f"{stem}.json", json.dumps(meta).encode())
        _fsync_dir(folder)
        mine = []
        for sidecar in sorted(folder.glob("*.json")):
            epoch = _epoch(sidecar)
            if epoch == checkpoint.epoch:
                mine.append(sidecar)
            elif epoch is not None:  # a deleted experiment's of the same name: never usable
                _remove(sidecar)
        for old in mine[: -self.keep]:
            _remove(old)

    def latest(self, experiment: str, epoch: str) -> Checkpoint | None:
        """The newest readable checkpoint of this incarnation (`epoch`) of the experiment."""
        folder = self.root / experiment
        for sidecar in sorted(folder.glob("*.json"), reverse=True):
            meta = _meta(sidecar)
            if meta is None or meta.get("epoch", "") != epoch:
                continue  # unreadable, or left by an earlier experiment of the same name
            try:
                model = sidecar.with_suffix(".vw").read_bytes()
                return Checkpoint(model=model, **meta)
            except (OSError, TypeError):
                continue  # unreadable or not a checkpoint: fall back to an older one
        return None

    def delete(self, experiment: str) -> None:
        shutil.rmtree(self.root / experiment, ignore_errors=True)

    def discard_after(self, experiment: str, learned_seq: int) -> None:
        """Remove checkpoints past `learned_seq`: they hold events the log no longer has, or
        that are now marked unlearnable. Synced, so a power cut does not bring them back."""
        folder = self.root / experiment
        removed = False
        for sidecar in folder.glob("*.json"):
            if sidecar.stem.isdigit() and int(sidecar.stem) > learned_seq:
                _remove(sidecar)
                removed = True
        if removed:
            _fsync_dir(folder)

    def discard(self, experiment: str, learned_seq: int) -> None:
        """Remove the checkpoint at `learned_seq` (one VW cannot load)."""
        _remove(self.root / experiment / f"{learned_seq:015d}.json")


def _meta(sidecar: Path) -> dict[str, Any] | None:
    """A sidecar's fields, or None when it cannot be read as a JSON object."""
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _epoch(sidecar: Path) -> str | None:
    meta = _meta(sidecar)
    epoch = None if meta is None else meta.get("epoch", "")
    return epoch if isinstance(epoch, str) else None


def _remove(sidecar: Path) -> None:
    sidecar.unlink(missing_ok=True)
    sidecar.with_suffix(".vw").unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
