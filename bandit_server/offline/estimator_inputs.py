"""Checked numpy inputs of the off-policy estimators: logged actions, propensities, policies.

Every check raises `InvalidArgument` naming the argument, the first offending index and value,
and how many more entries break the same rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bandit_server.errors import InvalidArgument, describe

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

PMF_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PolicyData:
    """Validated logged actions and propensities with a target policy, plus derived weights."""

    actions: IntArray
    propensities: FloatArray
    target_pmf: FloatArray
    target_prob: FloatArray  # pi(a_i | x_i): target probability of each logged action
    weights: FloatArray  # target_prob / propensities, unclipped

    @property
    def n(self) -> int:
        return int(self.actions.shape[0])


@dataclass(frozen=True)
class LoggedData(PolicyData):
    """`PolicyData` with the observed rewards and, optionally, a reward model."""

    rewards: FloatArray
    reward_model: FloatArray | None


def check_policy(
    actions: npt.ArrayLike,
    propensities: npt.ArrayLike,
    target_pmf: npt.ArrayLike,
    n: int | None = None,
    n_from: str = "actions",
) -> PolicyData:
    """Validate actions (n,), propensities (n,) and target_pmf (n, k); n is taken from actions
    unless given (then `n_from` names the array it came from, for messages)."""
    acts = _integers("actions", actions)
    if n is None:
        n = _length("actions", acts)
    else:
        _same_shape("actions", acts, (n,), n_from)
    props = _floats("propensities", propensities)
    _same_shape("propensities", props, (n,), n_from)
    _first_bad(
        "propensities", (props <= 0.0) | (props > 1.0), props, "must be in (0, 1]: a logged action "
        "was drawn, so its probability is positive",
    )  # fmt: skip
    pmf = check_pmf("target_pmf", target_pmf, n, n_from)
    k = pmf.shape[1]
    _first_bad(
        "actions",
        (acts < 0) | (acts >= k),
        acts,
        f"must be in [0, {k}) (target_pmf has {k} columns)",
    )
    target_prob = pmf[np.arange(n), acts]
    return PolicyData(acts, props, pmf, target_prob, target_prob / props)


def check_logged(
    rewards: npt.ArrayLike,
    actions: npt.ArrayLike,
    propensities: npt.ArrayLike,
    target_pmf: npt.ArrayLike,
    reward_model: npt.ArrayLike | None = None,
) -> LoggedData:
    """Validate every estimator input; n is the length of rewards."""
    rew = _floats("rewards", rewards)
    n = _length("rewards", rew)
    policy = check_policy(actions, propensities, target_pmf, n, "rewards")
    model = None
    if reward_model is not None:
        model = _floats("reward_model", reward_model)
        if model.shape != policy.target_pmf.shape:
            raise InvalidArgument(
                "reward_model",
                f"has shape {model.shape} but target_pmf has shape {policy.target_pmf.shape}: "
                "both are (n events, k actions)",
            )
    return LoggedData(
        policy.actions, policy.propensities, policy.target_pmf, policy.target_prob,
        policy.weights, rew, model,
    )  # fmt: skip


def check_pmf(field: str, values: npt.ArrayLike, n: int, n_from: str) -> FloatArray:
    """An (n, k) array whose rows are probability distributions (sum 1 within 1e-6)."""
    pmf = _floats(field, values)
    if pmf.ndim != 2 or pmf.shape[0] != n or pmf.shape[1] < 1:
        raise InvalidArgument(field, f"has shape {pmf.shape}; expected ({n}, k) to match {n_from}")
    _first_bad(field, pmf < 0.0, pmf, "is negative; probabilities must be >= 0")
    sums = pmf.sum(axis=1)
    _first_bad(
        field,
        np.abs(sums - 1.0) > PMF_TOLERANCE,
        sums,
        f"must sum to 1 (within {PMF_TOLERANCE:g})",
        "row sum",
    )
    return pmf


def check_alpha(alpha: float) -> float:
    """A miscoverage level strictly between 0 and 1."""
    if not _is_number(alpha) or not 0.0 < float(alpha) < 1.0:
        raise InvalidArgument("alpha", f"must be in (0, 1), got {describe(alpha)}")
    return float(alpha)


def check_reward_range(reward_range: tuple[float, float]) -> tuple[float, float]:
    """(low, high) with finite low < high."""
    try:
        low, high = reward_range
    except (TypeError, ValueError):
        raise InvalidArgument(
            "reward_range", f"must be a pair (low, high), got {describe(reward_range)}"
        ) from None
    if not (_is_number(low) and _is_number(high) and math.isfinite(low) and math.isfinite(high)):
        raise InvalidArgument(
            "reward_range", f"bounds must be finite numbers, got {describe(reward_range)}"
        )
    if not low < high:
        raise InvalidArgument("reward_range", f"needs low < high, got {describe(reward_range)}")
    return float(low), float(high)


def check_rewards_within(rewards: FloatArray, reward_range: tuple[float, float]) -> None:
    """Every reward lies in the closed interval reward_range."""
    low, high = reward_range
    _first_bad(
        "rewards", (rewards < low) | (rewards > high), rewards,
        f"is outside reward_range [{low:g}, {high:g}], which the bounded interval relies on",
    )  # fmt: skip


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _length(field: str, values: npt.NDArray[np.generic]) -> int:
    if values.ndim != 1:
        raise InvalidArgument(field, f"must be 1-D (n,), got shape {values.shape}")
    if values.shape[0] == 0:
        raise InvalidArgument(field, "is empty; need at least one event")
    return int(values.shape[0])


def _same_shape(
    field: str, values: npt.NDArray[np.generic], shape: tuple[int, ...], ref: str
) -> None:
    if values.shape != shape:
        raise InvalidArgument(field, f"has shape {values.shape} but {ref} has shape {shape}")


def _floats(field: str, values: npt.ArrayLike) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(field, f"must be numeric: {exc}") from None
    _first_bad(field, ~np.isfinite(array), array, "must be finite (no NaN or inf)")
    return array


def _integers(field: str, values: npt.ArrayLike) -> IntArray:
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.integer):
        raise InvalidArgument(field, f"must hold integer action indices, got dtype {array.dtype}")
    return array.astype(np.intp, copy=False)


def _first_bad(
    field: str,
    bad: npt.NDArray[np.bool_],
    values: npt.NDArray[np.generic],
    rule: str,
    what: str = "",
) -> None:
    if not bad.any():
        return
    where = np.argwhere(bad)
    index = tuple(int(i) for i in where[0])
    label = f"{field}[{', '.join(map(str, index))}]"
    value = values[index].item()
    more = f" ({len(where) - 1} more)" if len(where) > 1 else ""
    prefix = f"{what} of {label}" if what else label
    raise InvalidArgument(field, f"{prefix} is {describe(value)}; {rule}{more}")
