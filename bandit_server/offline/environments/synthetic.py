"""A configurable synthetic contextual bandit: features, reward model, noise, drift and delays.

The problem instance (reward parameters, action features) comes from `instance_seed`; the run
seed of `rounds(n, seed)` draws the contexts, the noise and the delays. So one environment is one
fixed problem, and several seeds are several samples of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bandit_server.core.types import FeatureValue
from bandit_server.errors import InvalidArgument, describe
from bandit_server.offline.environments.base import (
    Round,
    check_count,
    check_positive,
    check_run,
    per_round,
)

RewardModel = Literal["linear", "logistic", "interaction"]
DelayModel = Literal["none", "constant", "exponential"]
ACTION_NAMESPACE = "Action"
_REWARD_MODELS = ("linear", "logistic", "interaction")
_DELAY_MODELS = ("none", "constant", "exponential")
_DECIMALS = 4  # numeric features are rounded so logs stay short; rewards use the rounded values


@dataclass(frozen=True, slots=True)
class ContextNamespace:
    """One context namespace: `numeric` standard-normal features x0, x1, ... and one categorical
    feature per entry of `categorical` (its number of equally likely levels), named c0, c1, ...
    with values "l0", "l1", ...
    """

    name: str
    numeric: int = 0
    categorical: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name.startswith("_"):
            raise InvalidArgument("name", f"{describe(self.name)} is not a namespace name")
        if self.name == ACTION_NAMESPACE:
            raise InvalidArgument("name", f"{self.name!r} is the actions' namespace")
        check_count("numeric", self.numeric, 0)
        for i, levels in enumerate(self.categorical):
            check_count(f"categorical[{i}]", levels, 2)
        if self.numeric == 0 and not self.categorical:
            raise InvalidArgument("numeric", f"namespace {self.name!r} has no features")


DEFAULT_CONTEXT = (
    ContextNamespace("User", numeric=2, categorical=(3,)),
    ContextNamespace("Page", numeric=1, categorical=(4,)),
)


def censored_normal_mean(mean: np.ndarray, sd: float, low: float, high: float) -> np.ndarray:
    """E[clip(Y, low, high)] for Y ~ Normal(mean, sd): the expected reward when noise is clipped."""
    if sd == 0:
        return np.asarray(np.clip(mean, low, high))
    out = np.empty_like(mean)
    for i, mu in enumerate(mean.tolist()):
        a = (low - mu) / sd
        b = (high - mu) / sd
        cdf_a = 0.5 * math.erfc(-a / math.sqrt(2))
        cdf_b = 0.5 * math.erfc(-b / math.sqrt(2))
        pdf_a = math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        pdf_b = math.exp(-0.5 * b * b) / math.sqrt(2 * math.pi)
        out[i] = low * cdf_a + high * (1 - cdf_b) + mu * (cdf_b - cdf_a) + sd * (pdf_a - pdf_b)
    return out


@dataclass(frozen=True, slots=True)
class _Parameters:
    weights: np.ndarray  # linear/logistic: (k, d) per-action; interaction: (d, m)
    bias: np.ndarray  # (k,); zeros for interaction


@dataclass(frozen=True)
class SyntheticEnvironment:
    """A synthetic contextual bandit with `n_actions` actions and a known reward model.

    φ(x) is the context as a vector (numeric values, one-hot categorical levels); ψ(a) is
    action a's numeric features (fixed per action, drawn from `instance_seed`). The score is
    - "linear" and "logistic": s = (w_a·φ(x) + b_a) / √(dim φ + 1), one weight vector per action;
    - "interaction": s = φ(x)ᵀ W ψ(a) / √(dim φ · m): only context-action products matter,
      shared through the action features.
    Weights are standard normal, so s is roughly standard normal.
    Real-valued rewards ("linear", "interaction"): mean = mid + half · clip(`signal` · s, -1, 1)
    over `reward_range`, reward = mean + `noise` · N(0, 1), clipped to `reward_range` when
    `clip_rewards` (then the expected reward is that of the clipped variable, exactly).
    "logistic": reward is `reward_range`[1] with probability sigmoid(`logit_scale` · s), else
    `reward_range`[0]; `noise` must be 0.
    From round `drift_at` on, the weights are a second independent draw (same actions).
    Delays: "none" (zeros), "constant" (`delay_mean` seconds), "exponential" (mean `delay_mean`),
    drawn independently per action and round. Rounds are `seconds_between_rounds` apart.
    """

    n_actions: int = 5
    context: tuple[ContextNamespace, ...] = DEFAULT_CONTEXT
    action_numeric: int = 2
    action_indicator: bool = True
    reward: RewardModel = "linear"
    noise: float = 0.1
    signal: float = 0.2
    logit_scale: float = 1.5
    reward_range: tuple[float, float] = (0.0, 1.0)
    clip_rewards: bool = True
    drift_at: int | None = None
    delay: DelayModel = "none"
    delay_mean: float = 0.0
    seconds_between_rounds: float = 1.0
    instance_seed: int = 0

    def __post_init__(self) -> None:
        check_count("n_actions", self.n_actions, 2)
        if not self.context:
            raise InvalidArgument("context", "no namespaces; at least one is needed")
        names = [ns.name for ns in self.context]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise InvalidArgument(
                    f"context[{i}].name", f"{name!r} repeats context[{names.index(name)}].name"
                )
        check_count("action_numeric", self.action_numeric, 0)
        if self.reward not in _REWARD_MODELS:
            raise InvalidArgument(
                "reward", f"{describe(self.reward)} is not one of {_REWARD_MODELS}"
            )
        if self.reward == "interaction" and self.action_numeric < 1:
            raise InvalidArgument(
                "action_numeric", "interaction rewards need at least one numeric action feature"
            )
        if self.action_numeric == 0 and not self.action_indicator:
            raise InvalidArgument("action_indicator", "actions would have no features at all")
        if isinstance(self.noise, bool) or not isinstance(self.noise, int | float):
            raise InvalidArgument("noise", f"{describe(self.noise)} is not a number")
        if not 0 <= self.noise < math.inf:
            raise InvalidArgument("noise", f"{self.noise!r} is not a finite number >= 0")
        if self.reward == "logistic" and self.noise != 0:
            raise InvalidArgument(
                "noise", f"{self.noise!r}: logistic rewards are Bernoulli; noise must be 0"
            )
        check_positive("signal", self.signal)
        check_positive("logit_scale", self.logit_scale)
        low, high = self.reward_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise InvalidArgument(
                "reward_range", f"{self.reward_range!r} is not a finite (low, high) with low < high"
            )
        if self.drift_at is not None:
            check_count("drift_at", self.drift_at, 1)
        if self.delay not in _DELAY_MODELS:
            raise InvalidArgument("delay", f"{describe(self.delay)} is not one of {_DELAY_MODELS}")
        if self.delay == "none":
            if self.delay_mean != 0:
                raise InvalidArgument(
                    "delay_mean", f"{self.delay_mean!r} given but delay is 'none'"
                )
        else:
            check_positive("delay_mean", self.delay_mean)
        check_positive("seconds_between_rounds", self.seconds_between_rounds)
        check_count("instance_seed", self.instance_seed, 0)

    @property
    def name(self) -> str:
        drift = "" if self.drift_at is None else f",drift@{self.drift_at}"
        return f"synthetic({self.reward},k={self.n_actions}{drift})"

    @property
    def context_dim(self) -> int:
        """The length of φ(x): numeric features plus one slot per categorical level."""
        return sum(ns.numeric + sum(ns.categorical) for ns in self.context)

    @property
    def reward_bounds(self) -> tuple[float, float]:
        """Bounds of realised rewards: `reward_range` unless unclipped noise can leave it."""
        if self.clip_rewards or self.noise == 0:
            return self.reward_range
        return (-math.inf, math.inf)

    def _instance(self) -> tuple[np.ndarray, _Parameters, _Parameters]:
        features_seed, before_seed, after_seed = np.random.SeedSequence(self.instance_seed).spawn(3)
        features = np.round(
            np.random.default_rng(features_seed).standard_normal(
                (self.n_actions, self.action_numeric)
            ),
            _DECIMALS,
        )
        return features, self._draw_parameters(before_seed), self._draw_parameters(after_seed)

    def _draw_parameters(self, seed: np.random.SeedSequence) -> _Parameters:
        rng = np.random.default_rng(seed)
        d = self.context_dim
        if self.reward == "interaction":
            scale = math.sqrt(d * self.action_numeric)
            weights = rng.standard_normal((d, self.action_numeric)) / scale
            return _Parameters(weights, np.zeros(self.n_actions))
        scale = math.sqrt(d + 1)
        weights = rng.standard_normal((self.n_actions, d)) / scale
        return _Parameters(weights, rng.standard_normal(self.n_actions) / scale)

    def actions(self) -> tuple[dict[str, Any], ...]:
        """The actions as plain dicts, in index order, with their fixed features."""
        features, _, _ = self._instance()
        return self._actions(features)

    def _actions(self, features: np.ndarray) -> tuple[dict[str, Any], ...]:
        out = []
        for a in range(self.n_actions):
            namespace: dict[str, FeatureValue] = {}
            if self.action_indicator:
                namespace["action"] = f"a{a}"
            for j in range(self.action_numeric):
                namespace[f"f{j}"] = float(features[a, j])
            out.append({"id": f"a{a}", "features": {ACTION_NAMESPACE: namespace}})
        return tuple(out)

    def _score(self, phi: np.ndarray, features: np.ndarray, params: _Parameters) -> np.ndarray:
        if self.reward == "interaction":
            return np.asarray(features @ (phi @ params.weights))
        return np.asarray(params.weights @ phi + params.bias)

    def _location(self, score: np.ndarray) -> np.ndarray:
        """Real-valued rewards: the mean before noise and clipping."""
        low, high = self.reward_range
        return (low + high) / 2 + (high - low) / 2 * np.clip(self.signal * score, -1.0, 1.0)

    def rounds(self, n: int, seed: int) -> Iterator[Round]:
        check_run(n, seed)
        features, before, after = self._instance()
        actions = self._actions(features)
        k = self.n_actions
        numeric = [ns.numeric for ns in self.context]
        levels = [level for ns in self.context for level in ns.categorical]
        n_numeric = sum(numeric)
        low, high = self.reward_range

        def draw_context(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
            return {
                "numeric": np.round(rng.standard_normal((size, n_numeric)), _DECIMALS),
                "levels": rng.integers(0, levels, size=(size, len(levels))),
            }

        def draw_outcome(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
            if self.reward == "logistic":
                return {"u": rng.random((size, k))}
            return {"z": rng.standard_normal((size, k))}

        def draw_delay(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
            if self.delay == "exponential":
                return {"delay": rng.exponential(self.delay_mean, (size, k))}
            return {"delay": np.full((size, k), float(self.delay_mean))}

        context_seed, outcome_seed, delay_seed = np.random.SeedSequence(seed).spawn(3)
        contexts = per_round(context_seed, draw_context)
        outcomes = per_round(outcome_seed, draw_outcome)
        delays = per_round(delay_seed, draw_delay)
        for i in range(n):
            ctx, outcome, delay = next(contexts), next(outcomes), next(delays)
            context, phi = self._context(ctx["numeric"], ctx["levels"])
            phase = int(self.drift_at is not None and i >= self.drift_at)
            params = after if phase else before
            score = self._score(phi, features, params)
            if self.reward == "logistic":
                p = 1 / (1 + np.exp(-self.logit_scale * score))
                expected = low + (high - low) * p
                rewards = np.where(outcome["u"] < p, high, low)
            else:
                location = self._location(score)
                rewards = location + self.noise * outcome["z"]
                expected = location
                if self.clip_rewards:
                    expected = censored_normal_mean(location, float(self.noise), low, high)
                    rewards = np.clip(rewards, low, high)
            yield Round(
                index=i,
                time=i * float(self.seconds_between_rounds),
                context=context,
                actions=actions,
                expected_rewards=expected,
                rewards=rewards.astype(np.float64),
                delays=np.array(delay["delay"], dtype=np.float64),
                best_action=int(np.argmax(expected)),
                info={"phase": phase},
            )

    def _context(
        self, numeric: np.ndarray, levels: np.ndarray
    ) -> tuple[dict[str, dict[str, FeatureValue]], np.ndarray]:
        context: dict[str, dict[str, FeatureValue]] = {}
        phi = np.zeros(self.context_dim)
        slot = n = c = 0
        for ns in self.context:
            values: dict[str, FeatureValue] = {}
            for j in range(ns.numeric):
                x = float(numeric[n])
                values[f"x{j}"] = x
                phi[slot] = x
                slot += 1
                n += 1
            for j, count in enumerate(ns.categorical):
                level = int(levels[c])
                values[f"c{j}"] = f"l{level}"
                phi[slot + level] = 1.0
                slot += count
                c += 1
            context[ns.name] = values
        return context, phi
