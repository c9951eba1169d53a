"""The base every off-policy estimator shares, and checks of estimator parameters."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from bandit_server.errors import InvalidArgument, describe
from bandit_server.offline.estimator_inputs import FloatArray, LoggedData, check_logged
from bandit_server.offline.intervals import Terms


class Estimator(ABC):
    """Base of every estimator: a frozen dataclass whose parameters are checked on construction.

    Subclasses define `_terms`; the estimate is mean(direct) + sum(weighted) / sum(weights) of the
    returned `Terms` (just the mean of `direct` for linear estimators).
    """

    uses_reward_model: ClassVar[bool] = False

    @property
    @abstractmethod
    def name(self) -> str:
        """Short identifier, with any non-default parameters, e.g. "ips" or "ips(clip=10)"."""

    @abstractmethod
    def _terms(self, data: LoggedData) -> Terms: ...

    def _bet_weights(self, data: LoggedData) -> FloatArray | None:
        """Weights for the betting interval, or None when the estimator is not IPS-style."""
        return None

    def terms(
        self,
        rewards: npt.ArrayLike,
        actions: npt.ArrayLike,
        propensities: npt.ArrayLike,
        target_pmf: npt.ArrayLike,
        reward_model: npt.ArrayLike | None = None,
    ) -> Terms:
        """Validated per-event pieces of the estimate (see `Terms`)."""
        return self._terms(self._checked(rewards, actions, propensities, target_pmf, reward_model))

    def pseudo_outcomes(
        self,
        rewards: npt.ArrayLike,
        actions: npt.ArrayLike,
        propensities: npt.ArrayLike,
        target_pmf: npt.ArrayLike,
        reward_model: npt.ArrayLike | None = None,
    ) -> FloatArray:
        """Per-event terms whose mean is the estimate. For self-normalised estimators these are
        the linearised (influence) terms, whose sample variance over n is the delta-method one."""
        return self.terms(rewards, actions, propensities, target_pmf, reward_model).influence()

    def point(
        self,
        rewards: npt.ArrayLike,
        actions: npt.ArrayLike,
        propensities: npt.ArrayLike,
        target_pmf: npt.ArrayLike,
        reward_model: npt.ArrayLike | None = None,
    ) -> float:
        """The estimated value of the target policy."""
        return self.terms(rewards, actions, propensities, target_pmf, reward_model).value()

    def _checked(
        self,
        rewards: npt.ArrayLike,
        actions: npt.ArrayLike,
        propensities: npt.ArrayLike,
        target_pmf: npt.ArrayLike,
        reward_model: npt.ArrayLike | None,
    ) -> LoggedData:
        if self.uses_reward_model and reward_model is None:
            raise InvalidArgument(
                "reward_model", f"{self.name} needs a reward_model of shape (n, k); got None"
            )
        return check_logged(rewards, actions, propensities, target_pmf, reward_model)


def capped(weights: FloatArray, cap: float | None) -> FloatArray:
    return weights if cap is None else np.minimum(weights, cap)


def check_cap(field: str, value: float | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or math.isnan(value) or value <= 0:  # type: ignore[arg-type,operator]
        wanted = "a positive number" + (" or None" if allow_none else "")
        raise InvalidArgument(field, f"must be {wanted}, got {describe(value)}")


def check_count(field: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        raise InvalidArgument(field, f"must be an integer >= {minimum}, got {describe(value)}")


def named(base: str, **params: float | None) -> str:
    shown = [f"{k}={v:g}" for k, v in params.items() if v is not None]
    return f"{base}({', '.join(shown)})" if shown else base
