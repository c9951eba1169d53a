"""Run policies online against a simulation environment, as the service would, but offline.

Per round: build the DSJSON example with `core.dsjson`, get the policy's distribution, draw the
action with a seeded generator exactly as the service does (`core.sampling.draw`), observe the
round's realised reward, and learn from (action, probability, cost = -reward) once the reward
has arrived in simulated time. Rewards arrive `Round.delays[chosen]` seconds after the decision
and are learned, in arrival order, before the first decision made at or after their arrival.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from bandit_server.core.dsjson import (
    DecisionRecord,
    Label,
    context_json,
    export_line,
    learning_line,
    prediction_line,
)
from bandit_server.core.policy import Pmf, Policy
from bandit_server.core.sampling import draw
from bandit_server.core.types import Action, action_from_mapping, namespaces_from_mapping
from bandit_server.errors import InvalidArgument, describe
from bandit_server.learners.vw import VWPolicy, validate_args
from bandit_server.offline.environments.base import Environment, Round, check_run

BUILTIN_POLICIES = ("uniform", "oracle", "constant:<index>")
# The action draws come from their own stream of the run seed, apart from the streams the
# environments spawn, so a policy's choices never shift the environment's draws.
_SAMPLER_STREAM = 0x5A3D1E
LOG_START = datetime(2024, 1, 1, tzinfo=UTC)


def _check_policy(policy: object, field: str) -> None:
    if callable(policy):
        return
    if not isinstance(policy, str):
        raise InvalidArgument(field, f"{describe(policy)} is not a policy name or VW command line")
    if policy in ("uniform", "oracle"):
        return
    if policy.startswith("constant:"):
        index = policy.removeprefix("constant:")
        if not index.isdigit():
            raise InvalidArgument(field, f"{policy!r}: 'constant:' needs an action index >= 0")
        return
    validate_args(policy, field, isolate=True)


@dataclass(frozen=True)
class PolicySpec:
    """A policy to simulate: a VW command line (must include --cb_explore_adf), one of
    BUILTIN_POLICIES (non-learning), or a factory of any `core.policy.Policy` (then `label`
    is required). `label` names it in traces and defaults to the command line.
    """

    policy: str | Callable[[], Policy]
    label: str = ""

    def __post_init__(self) -> None:
        _check_policy(self.policy, "policy")
        if not self.label:
            if not isinstance(self.policy, str):
                raise InvalidArgument("label", "a policy given as a factory needs a label")
            object.__setattr__(self, "label", self.policy)


def as_policy_spec(policy: str | PolicySpec, field: str = "policy") -> PolicySpec:
    """`policy` as a PolicySpec; a bad one raises InvalidArgument naming `field`."""
    if isinstance(policy, PolicySpec):
        return policy
    _check_policy(policy, field)
    return PolicySpec(policy)


class _Agent:
    """What the simulator needs from a policy: a distribution per round, and learning."""

    def pmf(self, round_: Round, line: str) -> Pmf:
        raise NotImplementedError

    def learn(self, line: str) -> None:
        """Non-learning policies ignore feedback."""


class _Learner(_Agent):
    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def pmf(self, round_: Round, line: str) -> Pmf:
        return self._policy.predict_one(line)

    def learn(self, line: str) -> None:
        self._policy.learn_one(line)


class _Uniform(_Agent):
    def pmf(self, round_: Round, line: str) -> Pmf:
        k = len(round_.actions)
        return [(i, 1.0 / k) for i in range(k)]


class _Constant(_Agent):
    def __init__(self, index: int) -> None:
        self._index = index

    def pmf(self, round_: Round, line: str) -> Pmf:
        return _point_mass(self._index, len(round_.actions))


class _Oracle(_Agent):
    def pmf(self, round_: Round, line: str) -> Pmf:
        return _point_mass(round_.best_action, len(round_.actions))


def _point_mass(index: int, k: int) -> Pmf:
    return [(index, 1.0)] + [(i, 0.0) for i in range(k) if i != index]


def _agent(spec: PolicySpec, n_actions: int) -> _Agent:
    policy = spec.policy
    if not isinstance(policy, str):
        return _Learner(policy())
    if policy == "uniform":
        return _Uniform()
    if policy == "oracle":
        return _Oracle()
    if policy.startswith("constant:"):
        index = int(policy.removeprefix("constant:"))
        if index >= n_actions:
            raise InvalidArgument(
                "policy", f"{policy!r}: the environment has only {n_actions} actions"
            )
        return _Constant(index)
    return _Learner(VWPolicy(policy))


@dataclass(frozen=True, slots=True)
class _Step:
    round: Round
    c_json: str
    ranking: tuple[int, ...]
    probabilities: tuple[float, ...]
    reward: float
    reward_time: float

    @property
    def chosen(self) -> int:
        return self.ranking[0]


def _steps(env: Environment, spec: PolicySpec, n: int, seed: int) -> Iterator[_Step]:
    check_run(n, seed)
    agent = _agent(spec, env.n_actions)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SAMPLER_STREAM,)))
    return _run(env, agent, n, seed, rng)


def _run(
    env: Environment, agent: _Agent, n: int, seed: int, rng: np.random.Generator
) -> Iterator[_Step]:
    pending: list[tuple[float, int, str]] = []  # (arrival time, round, labelled line): a heap
    seen_actions: tuple[dict[str, Any], ...] | None = None
    candidates: tuple[Action, ...] = ()
    for round_ in env.rounds(n, seed):
        while pending and pending[0][0] <= round_.time:
            agent.learn(heapq.heappop(pending)[2])
        if round_.actions is not seen_actions:  # environments reuse one tuple; convert it once
            seen_actions = round_.actions
            candidates = tuple(action_from_mapping(a) for a in round_.actions)
        c_json = context_json(namespaces_from_mapping(round_.context), candidates)
        ranking, probabilities = draw(agent.pmf(round_, prediction_line(c_json)), rng.random())
        chosen = ranking[0]
        reward = float(round_.rewards[chosen])
        arrival = round_.time + float(round_.delays[chosen])
        label = Label(chosen, probabilities[0], -reward)
        heapq.heappush(pending, (arrival, round_.index, learning_line(c_json, label)))
        yield _Step(round_, c_json, ranking, probabilities, reward, arrival)


def simulate(
    env: Environment, policy: str | PolicySpec, n: int, seed: int
) -> Iterator[dict[str, Any]]:
    """One record per round of `policy` run online for `n` rounds of `env` seeded with `seed`.

    Records hold: round, time, policy (its label), chosen (index), action_id, probability (with
    which it was drawn), reward, expected_reward (of the chosen), best_expected_reward, regret
    (their difference), cumulative_reward, cumulative_regret, chose_best (its expected reward is
    the best), reward_time (when the reward arrives), plus the round's `info` entries (prefixed
    with "info." if one clashes). Same seed, same records. Arguments are checked on the call.
    """
    spec = as_policy_spec(policy)
    return _records(_steps(env, spec, n, seed), spec.label)


def _records(steps: Iterator[_Step], label: str) -> Iterator[dict[str, Any]]:
    cumulative_reward = 0.0
    cumulative_regret = 0.0
    for step in steps:
        round_ = step.round
        expected = float(round_.expected_rewards[step.chosen])
        best = float(round_.expected_rewards[round_.best_action])
        cumulative_reward += step.reward
        cumulative_regret += best - expected
        record: dict[str, Any] = {
            "round": round_.index,
            "time": round_.time,
            "policy": label,
            "chosen": step.chosen,
            "action_id": str(round_.actions[step.chosen]["id"]),
            "probability": step.probabilities[0],
            "reward": step.reward,
            "expected_reward": expected,
            "best_expected_reward": best,
            "regret": best - expected,
            "cumulative_reward": cumulative_reward,
            "cumulative_regret": cumulative_regret,
            "chose_best": expected == best,
            "reward_time": step.reward_time,
        }
        for key, value in round_.info.items():
            record[f"info.{key}" if key in record else key] = value
        yield record


def simulate_log(env: Environment, policy: str | PolicySpec, n: int, seed: int) -> Iterator[str]:
    """The decisions of `simulate(env, policy, n, seed)` as labelled DSJSON lines, in decision
    order, exactly as the service exports them: the full logged distribution, the chosen action
    and its probability, cost = -reward. Event ids are "sim-<seed>-<round>"; timestamps count
    simulated seconds from LOG_START; the model version is the policy's label.
    """
    spec = as_policy_spec(policy)
    return _lines(_steps(env, spec, n, seed), spec.label, seed)


def _lines(steps: Iterator[_Step], label: str, seed: int) -> Iterator[str]:
    for step in steps:
        moment = LOG_START + timedelta(seconds=step.round.time)
        yield export_line(
            DecisionRecord(
                event_id=f"sim-{seed}-{step.round.index}",
                timestamp=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                c_json=step.c_json,
                ranking_indices=step.ranking,
                ranking_probabilities=step.probabilities,
                model_version=label,
                label=Label(step.chosen, step.probabilities[0], -step.reward),
            )
        )


def compare(
    env: Environment,
    policies: Sequence[str | PolicySpec],
    n: int,
    seed: int,
    progress: bool = True,
) -> pd.DataFrame:
    """Every policy run on the same `n` rounds (same seed, so the same contexts, reward draws
    and sampler uniforms), one `simulate` record per policy and round. The progress bar shows
    only when `progress` and stderr is a terminal.
    """
    specs = [as_policy_spec(p, f"policies[{i}]") for i, p in enumerate(policies)]
    if not specs:
        raise InvalidArgument("policies", "no policies given")
    labels: dict[str, int] = {}
    for i, spec in enumerate(specs):
        first = labels.setdefault(spec.label, i)
        if first != i:
            raise InvalidArgument(
                f"policies[{i}]", f"label {spec.label!r} repeats policies[{first}]"
            )
    check_run(n, seed)
    rows: list[dict[str, Any]] = []
    show = progress and sys.stderr.isatty()
    with tqdm(total=n * len(specs), disable=not show, desc=env.name, unit="round") as bar:
        for spec in specs:
            bar.set_postfix_str(spec.label, refresh=False)
            for record in simulate(env, spec, n, seed):
                rows.append(record)
                bar.update()
    return pd.DataFrame(rows)


def summarize(trace: pd.DataFrame, last: int | None = None) -> pd.DataFrame:
    """Per policy, in order of appearance: average reward, regret and best-choice share over the
    last `last` rounds (all when None), and the total reward and regret over the whole run.
    """
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise InvalidArgument("last", f"{describe(last)} is not an integer >= 1")
    groups = trace.groupby("policy", sort=False)
    window = groups.tail(last) if last is not None else trace
    tail = window.groupby("policy", sort=False)
    return pd.DataFrame(
        {
            "rounds": groups.size(),
            "avg_reward": tail["reward"].mean(),
            "avg_expected": tail["expected_reward"].mean(),
            "avg_regret": tail["regret"].mean(),
            "best_share": tail["chose_best"].mean(),
            "total_reward": groups["reward"].sum(),
            "total_regret": groups["regret"].sum(),
        }
    )
