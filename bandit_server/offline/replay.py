"""Counterfactual replay: each candidate policy's distribution over the logged actions, per event.

A VW candidate runs over the log in order exactly as VW's own driver runs over a DSJSON file:
for each event it predicts on the logged context and actions (that prediction is recorded),
then learns from what the log can teach (the logged action, its cost and its logged
probability: the IPS-style update) unless the line is `_skipLearn`. The recorded predictions are
therefore those of a policy that learns online from the log, as it would have if deployed.

Fixed candidates need no learning: the logged (online) policy's own distribution, the baseline
(always the first action, as Personalizer's baseline), uniform random, or one action index.

What VW's own driver reports on the same file (`--dsjson -d log.json <args>`, pinned by
tests/offline/test_replay.py for epsilon, squarecb, cover, bag, softmax; ips, dr, mtr):
- lines marked `_skipLearn` are dropped by VW's reader: not examples, not in the loss;
- for --cb_explore_adf, whatever the --cb_type, "average loss" is
  (1/L) * sum over the L labelled lines of pi_t(a_t|x_t) * cost_t / p_t, with pi_t the pmf VW
  predicted on line t *before* learning from it (progressive validation), a_t, cost_t, p_t the
  logged action, cost and probability: the IPS estimate of the learning policy's expected cost,
  printed with 6 decimals. So VW's average loss = -IPS value of our replayed pmfs;
- `-p` prints those same pmfs (6 decimals), and the `-f` model predicts exactly as our final one.
Probabilities are kept as VW returns them (float32 values, summing to 1 within ~1e-7).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
from tqdm import tqdm

from bandit_server.errors import InvalidArgument, describe
from bandit_server.learners.vw import VWPolicy, validate_args, validate_cost_model_args
from bandit_server.offline.dataset import FloatArray, LoggedDataset

# The reward model for DM/DR: a VW regression of cost on (context, action) over every pair of
# namespaces, fitted progressively (see `reward_model`).
DEFAULT_REWARD_MODEL_ARGS = "--cb_adf --cb_type dm -q ::"


@dataclass(frozen=True, slots=True)
class VWLearner:
    """A VW command line (with --cb_explore_adf) learning online over the log."""

    args: str
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", validate_args(self.args, "policy", isolate=True))
        if not self.name:
            object.__setattr__(self, "name", self.args)


@dataclass(frozen=True, slots=True)
class LoggedPolicy:
    """The policy that made the log: its logged distribution `p`, mapped to `_multi` order."""

    name: str = "online (logged)"


@dataclass(frozen=True, slots=True)
class FirstAction:
    """Always the first action (index 0): Personalizer's baseline."""

    name: str = "baseline (first action)"


@dataclass(frozen=True, slots=True)
class UniformRandom:
    """Every candidate action with equal probability."""

    name: str = "uniform random"


@dataclass(frozen=True, slots=True)
class ConstantAction:
    """Always action `index` (0-based `_multi` position); the first action on events that
    have fewer actions."""

    index: int
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise InvalidArgument("index", f"{describe(self.index)} is not an action index >= 0")
        if not self.name:
            object.__setattr__(self, "name", f"constant action {self.index}")


Candidate = VWLearner | LoggedPolicy | FirstAction | UniformRandom | ConstantAction

BASELINE_CANDIDATES: tuple[Candidate, ...] = (FirstAction(), UniformRandom())


def parse_candidate(text: str, field: str = "policy") -> Candidate:
    """'logged' (or 'online'), 'baseline', 'uniform', 'constant:<index>', or a VW command line."""
    word = text.strip()
    if word in ("logged", "online"):
        return LoggedPolicy()
    if word == "baseline":
        return FirstAction()
    if word == "uniform":
        return UniformRandom()
    if word.startswith("constant:"):
        index = word.removeprefix("constant:")
        if not index.isdigit():
            raise InvalidArgument(field, f"{text!r}: 'constant:' needs an action index >= 0")
        return ConstantAction(int(index))
    try:
        return VWLearner(word)
    except InvalidArgument as exc:
        raise InvalidArgument(field, str(exc)) from None


@dataclass(frozen=True)
class Replay:
    """Per candidate (by name): its (n, k) distribution over each event's actions (zero beyond an
    event's action count); final models of the VW candidates."""

    candidates: tuple[Candidate, ...]
    pmfs: dict[str, FloatArray]
    models: dict[str, bytes] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.candidates)


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm[NoReturn]:
    """A tqdm bar on stderr, shown only when asked for and stderr is a terminal."""
    return tqdm(
        total=total,
        desc=desc[:40],
        unit="ev",
        unit_scale=True,
        leave=False,
        disable=not (enabled and sys.stderr.isatty()),
    )


def replay(
    dataset: LoggedDataset,
    candidates: Sequence[Candidate],
    *,
    progress: bool = True,
    workers: int = 1,
) -> Replay:
    """Replay every candidate over the log, in the dataset's order. With `workers` > 1, VW
    candidates replay in that many forked processes (same results, bit for bit)."""
    names: dict[str, int] = {}
    for i, candidate in enumerate(candidates):
        first = names.setdefault(candidate.name, i)
        if first != i:
            raise InvalidArgument(
                f"policies[{i}]", f"name {candidate.name!r} repeats policies[{first}]"
            )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgument("workers", f"{describe(workers)} is not an integer >= 1")
    learners = [c for c in candidates if isinstance(c, VWLearner)]
    if workers > 1 and len(learners) > 1 and "fork" in mp.get_all_start_methods():
        learned = _replay_forked(dataset, learners, workers, progress)
    else:
        learned = {
            c.name: vw_pmfs(dataset, c.args, progress=progress, desc=c.name) for c in learners
        }
    pmfs: dict[str, FloatArray] = {}
    models: dict[str, bytes] = {}
    for candidate in candidates:
        if isinstance(candidate, VWLearner):
            pmfs[candidate.name], models[candidate.name] = learned[candidate.name]
        else:
            pmfs[candidate.name] = fixed_pmfs(dataset, candidate)
    return Replay(tuple(candidates), pmfs, models)


# The dataset a forked replay worker reads: inherited through fork, never pickled.
_FORKED_DATASET: LoggedDataset | None = None


def _replay_in_worker(args: str) -> tuple[FloatArray, bytes]:
    assert _FORKED_DATASET is not None
    return vw_pmfs(_FORKED_DATASET, args, progress=False)


def _replay_forked(
    dataset: LoggedDataset, learners: Sequence[VWLearner], workers: int, progress: bool
) -> dict[str, tuple[FloatArray, bytes]]:
    global _FORKED_DATASET
    _ = dataset.vw_lines, dataset.learnable  # built once here, shared by every worker
    _FORKED_DATASET = dataset
    out: dict[str, tuple[FloatArray, bytes]] = {}
    try:
        with (
            ProcessPoolExecutor(
                min(workers, len(learners)), mp_context=mp.get_context("fork")
            ) as pool,
            tqdm(
                total=len(learners),
                desc="policies",
                leave=False,
                disable=not (progress and sys.stderr.isatty()),
            ) as bar,
        ):
            futures = {pool.submit(_replay_in_worker, c.args): c.name for c in learners}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.update(1)
    finally:
        _FORKED_DATASET = None
    return out


def fixed_pmfs(
    dataset: LoggedDataset, candidate: LoggedPolicy | FirstAction | UniformRandom | ConstantAction
) -> FloatArray:
    """The (n, k) distributions of a candidate that does not learn."""
    n, k = len(dataset), dataset.k
    if isinstance(candidate, LoggedPolicy):
        return np.array(dataset.logged_pmf, dtype=np.float64)
    if isinstance(candidate, UniformRandom):
        width = dataset.n_actions[:, None]
        return np.where(np.arange(k)[None, :] < width, 1.0 / width, 0.0)
    index = np.zeros(n, dtype=np.int64)
    if isinstance(candidate, ConstantAction):
        if len(dataset) and candidate.index >= k:
            # Every event would fall back to its first action: scored as "baseline", under
            # another name. An index no event has is a mistake (indices start at 0).
            raise InvalidArgument(
                "policy",
                f"'constant:{candidate.index}': no event in the log has more than {k} actions "
                f"(indices are 0-based: 0 to {k - 1})",
            )
        index = np.where(candidate.index < dataset.n_actions, candidate.index, 0)
    pmf = np.zeros((n, k))
    pmf[np.arange(n), index] = 1.0
    return pmf


def vw_pmfs(
    dataset: LoggedDataset, args: str, *, progress: bool = True, desc: str = ""
) -> tuple[FloatArray, bytes]:
    """A VW explorer's progressive distributions over the log, and its final model."""
    policy = VWPolicy(args)
    return _run(policy, dataset, progress, desc or args), policy.serialize()


def reward_model(
    dataset: LoggedDataset,
    args: str = DEFAULT_REWARD_MODEL_ARGS,
    *,
    reward_range: tuple[float, float] | None = None,
    progress: bool = True,
) -> FloatArray:
    """Predicted rewards (n, k) for DM/DR, progressive: the prediction for event i comes from a
    `--cb_adf` regressor that has learned only from events before i (never from i itself), so
    the model is never fitted on the event it predicts. Clipped to `reward_range` if given."""
    regressor = VWPolicy(validate_cost_model_args(args))
    costs = _run(regressor, dataset, progress, "reward model")
    rewards = 0.0 - costs  # not -costs: that leaves -0.0 entries
    rewards[np.arange(dataset.k)[None, :] >= dataset.n_actions[:, None]] = 0.0
    if reward_range is not None:
        np.clip(rewards, reward_range[0], reward_range[1], out=rewards)
    return rewards


def _run(policy: VWPolicy, dataset: LoggedDataset, progress: bool, desc: str) -> FloatArray:
    """The policy's progressive predictions over the log as an (n, k) array."""
    lines, learn = dataset.vw_lines, dataset.learnable.tolist()
    out = np.zeros((len(dataset), dataset.k))
    with progress_bar(len(dataset), desc, progress) as bar:
        # Chunks keep VW's Python-side predictions short-lived (and the bar moving).
        for start in range(0, len(lines), _CHUNK):
            stop = min(start + _CHUNK, len(lines))
            predictions = policy.replay(lines[start:stop], learn[start:stop])
            _scatter(predictions, out[start:stop])
            bar.update(stop - start)
    return out


_CHUNK = 8192


def _scatter(predictions: list[list[tuple[int, float]]], out: FloatArray) -> None:
    """Write VW's (index, value) lists into the rows of `out`."""
    n = len(predictions)
    lengths = np.fromiter(map(len, predictions), dtype=np.int64, count=n)
    m = int(lengths.sum())
    # One pass over every (index, value) scalar; indices < 2**53 are exact as floats.
    pairs = np.fromiter(
        itertools.chain.from_iterable(itertools.chain.from_iterable(predictions)),
        dtype=np.float64,
        count=2 * m,
    ).reshape(m, 2)
    out[np.repeat(np.arange(n), lengths), pairs[:, 0].astype(np.int64)] = pairs[:, 1]
