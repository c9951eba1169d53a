"""A DSJSON decision log as columns: what offline evaluation needs from each logged event.

Reads the layouts VW's decision service, Azure Personalizer exports and this service's own export
write. Unknown keys are tolerated. Lines marked `"_skipLearn": true` are kept (they are replayed as
predictions) but carry no reward, so estimates leave them out; they are counted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from bandit_server.core.dsjson import Label, learning_line, prediction_line
from bandit_server.errors import InvalidArgument, describe
from bandit_server.offline.dsjson_lines import DEFAULT_NAMESPACE as DEFAULT_NAMESPACE
from bandit_server.offline.dsjson_lines import LogColumns, log_warnings, parse_lines, read_lines

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One logged decision, as plain values (so `pd.DataFrame(dataset.events())` works)."""

    line_number: int  # 1-based, in the source
    event_id: str
    timestamp: str
    c_json: str  # the `c` object's text, as VW reads it
    n_actions: int
    chosen_index: int  # 0-based position in `_multi`
    probability: float  # the logged propensity of the chosen action
    reward: float  # -cost; NaN when the event was never learned
    logged_pmf: tuple[float, ...]  # probability of each `_multi` position under the logged policy
    model_version: str
    skip_learn: bool


@dataclass(frozen=True, slots=True)
class NamespaceInventory:
    """Namespaces found in the log's `c` objects, in order of first appearance."""

    shared: tuple[str, ...]
    action: tuple[str, ...]


@dataclass(frozen=True)
class LoggedDataset:
    """A decision log in file order, as columns. Arrays have one row per event (n) and, for
    per-action values, k = the largest action count, padded with zeros."""

    source: str
    event_ids: tuple[str, ...]
    timestamps: tuple[str, ...]
    c_jsons: tuple[str, ...]
    model_versions: tuple[str, ...]
    line_numbers: IntArray
    n_actions: IntArray
    actions: IntArray
    propensities: FloatArray
    rewards: FloatArray
    logged_pmf: FloatArray
    skip_learn: BoolArray
    namespaces: NamespaceInventory
    warnings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.c_jsons)
        if n == 0:
            raise InvalidArgument("log", f"{self.source}: no events")
        columns: dict[str, Sized] = {
            "event_ids": self.event_ids,
            "timestamps": self.timestamps,
            "model_versions": self.model_versions,
            "line_numbers": self.line_numbers,
            "n_actions": self.n_actions,
            "actions": self.actions,
            "propensities": self.propensities,
            "rewards": self.rewards,
            "logged_pmf": self.logged_pmf,
            "skip_learn": self.skip_learn,
        }
        for name, column in columns.items():
            if len(column) != n:
                raise InvalidArgument(name, f"has {len(column)} rows, expected {n}")
        for array in (self.actions, self.propensities, self.rewards, self.logged_pmf):
            array.setflags(write=False)

    def __len__(self) -> int:
        return len(self.c_jsons)

    @property
    def k(self) -> int:
        """The largest number of actions of any event: the width of per-action arrays."""
        return int(self.logged_pmf.shape[1])

    @cached_property
    def learnable(self) -> BoolArray:
        """Events with a reward: the ones learned from and estimated on."""
        mask = ~self.skip_learn
        mask.setflags(write=False)
        return mask

    @property
    def n_skipped(self) -> int:
        return int(self.skip_learn.sum())

    @cached_property
    def vw_lines(self) -> tuple[str, ...]:
        """Per event, the line VW learns from (labels before `c`), or a prediction-only line."""
        return tuple(
            prediction_line(c) if skip else learning_line(c, Label(int(a), float(p), -float(r)))
            for c, skip, a, p, r in zip(
                self.c_jsons,
                self.skip_learn.tolist(),
                self.actions.tolist(),
                self.propensities.tolist(),
                self.rewards.tolist(),
                strict=True,
            )
        )

    def event(self, i: int) -> LoggedEvent:
        n = int(self.n_actions[i])
        return LoggedEvent(
            line_number=int(self.line_numbers[i]),
            event_id=self.event_ids[i],
            timestamp=self.timestamps[i],
            c_json=self.c_jsons[i],
            n_actions=n,
            chosen_index=int(self.actions[i]),
            probability=float(self.propensities[i]),
            reward=float(self.rewards[i]),
            logged_pmf=tuple(float(p) for p in self.logged_pmf[i, :n]),
            model_version=self.model_versions[i],
            skip_learn=bool(self.skip_learn[i]),
        )

    def events(self) -> Iterator[LoggedEvent]:
        return (self.event(i) for i in range(len(self)))

    def subset(self, indices: Sequence[int] | IntArray) -> LoggedDataset:
        """The events at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        k = int(self.n_actions[idx].max()) if len(idx) else 0
        return LoggedDataset(
            source=self.source,
            event_ids=tuple(self.event_ids[i] for i in idx.tolist()),
            timestamps=tuple(self.timestamps[i] for i in idx.tolist()),
            c_jsons=tuple(self.c_jsons[i] for i in idx.tolist()),
            model_versions=tuple(self.model_versions[i] for i in idx.tolist()),
            line_numbers=self.line_numbers[idx],
            n_actions=self.n_actions[idx],
            actions=self.actions[idx].copy(),
            propensities=self.propensities[idx].copy(),
            rewards=self.rewards[idx].copy(),
            logged_pmf=self.logged_pmf[idx, :k].copy(),
            skip_learn=self.skip_learn[idx],
            namespaces=self.namespaces,
            warnings=self.warnings,
        )

    def sorted_by_time(self) -> LoggedDataset:
        """Events in timestamp order (stable: ties keep file order). Every event needs a time."""
        missing = [i for i, t in enumerate(self.timestamps) if not t]
        if missing:
            raise InvalidArgument(
                "Timestamp",
                f"{self.source}:{int(self.line_numbers[missing[0]])}: no Timestamp, "
                "so the log cannot be put in time order",
            )
        times = np.empty(len(self), dtype="datetime64[ns]")
        for i, text in enumerate(self.timestamps):
            try:
                times[i] = np.datetime64(text.removesuffix("Z"), "ns")
            except ValueError:
                raise InvalidArgument(
                    "Timestamp",
                    f"{self.source}:{int(self.line_numbers[i])}: {describe(text)} "
                    "is not an ISO 8601 time",
                ) from None
        return self.subset(np.argsort(times, kind="stable"))

    def with_c_jsons(self, c_jsons: Sequence[str]) -> LoggedDataset:
        """The same events with other `c` texts (same actions in the same positions)."""
        if len(c_jsons) != len(self):
            raise InvalidArgument("c_jsons", f"has {len(c_jsons)} rows, expected {len(self)}")
        return LoggedDataset(
            source=self.source,
            event_ids=self.event_ids,
            timestamps=self.timestamps,
            c_jsons=tuple(c_jsons),
            model_versions=self.model_versions,
            line_numbers=self.line_numbers,
            n_actions=self.n_actions,
            actions=self.actions,
            propensities=self.propensities,
            rewards=self.rewards,
            logged_pmf=self.logged_pmf,
            skip_learn=self.skip_learn,
            namespaces=self.namespaces,
            warnings=self.warnings,
        )


def load_dsjson(
    source: Path | str | Iterable[str], *, name: str | None = None, progress: bool = False
) -> LoggedDataset:
    """Read DSJSON lines from a file path (optionally gzip) or any iterable of lines; with
    `progress`, a line counter on stderr when it is a terminal.

    Raises InvalidArgument naming the source, the line number and what is wrong.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidArgument("log", f"{str(path)!r} is not a readable file")
        lines: Iterable[str] = read_lines(path)
        name = name or str(path)
    else:
        lines, name = source, name or "<lines>"
    with tqdm(
        lines,
        desc="reading log",
        unit="line",
        unit_scale=True,
        leave=False,
        disable=not (progress and sys.stderr.isatty()),
    ) as counted:
        return _dataset(parse_lines(counted, name), name)


def _dataset(cols: LogColumns, source: str) -> LoggedDataset:
    k = max(cols.n_actions)
    pmf = np.zeros((len(cols.pmfs), k))
    for i, row in enumerate(cols.pmfs):
        pmf[i, : len(row)] = row
    return LoggedDataset(
        source=source,
        event_ids=tuple(cols.event_ids),
        timestamps=tuple(cols.timestamps),
        c_jsons=tuple(cols.c_jsons),
        model_versions=tuple(cols.model_versions),
        line_numbers=np.array(cols.line_numbers, dtype=np.int64),
        n_actions=np.array(cols.n_actions, dtype=np.int64),
        actions=np.array(cols.actions, dtype=np.int64),
        propensities=np.array(cols.propensities, dtype=np.float64),
        rewards=np.array(cols.rewards, dtype=np.float64),
        logged_pmf=pmf,
        skip_learn=np.array(cols.skip, dtype=np.bool_),
        namespaces=NamespaceInventory(tuple(cols.shared), tuple(cols.action_ns)),
        warnings=tuple(log_warnings(cols)),
    )
