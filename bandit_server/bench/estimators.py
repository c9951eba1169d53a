"""Off-policy estimator timings on 1,000,000 synthetic logged events with 5 actions.

Times every estimator's point estimate with its Wald interval (diagnostics and input checks
included), a 1,000-resample bootstrap for IPS, SNIPS and DR, and the betting interval for IPS.
`run()` returns the rows for the `make bench` aggregator; `main()` prints them as a table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bandit_server.offline.estimators import ALL_ESTIMATORS, DR, IPS, SNIPS, Estimator, estimate

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SyntheticLog:
    """Estimator inputs for n logged events with k actions."""

    rewards: FloatArray
    actions: npt.NDArray[np.intp]
    propensities: FloatArray
    target_pmf: FloatArray
    reward_model: FloatArray


def synthetic_log(n_events: int, n_actions: int, seed: int) -> SyntheticLog:
    """Logged events from a softmax logging policy (mixed with 20% uniform so every action has
    probability >= 0.04) and an epsilon-greedy target on a noisy model of the true means."""
    rng = np.random.default_rng(seed)
    means = rng.beta(2.0, 5.0, (n_events, n_actions))
    logits = rng.normal(0.0, 1.0, (n_events, n_actions))
    logging = np.exp(logits)
    logging = 0.8 * logging / logging.sum(axis=1, keepdims=True) + 0.2 / n_actions
    cdf = np.cumsum(logging, axis=1)
    actions = np.minimum((rng.random(n_events)[:, None] >= cdf).sum(axis=1), n_actions - 1)
    rows = np.arange(n_events)
    rewards = (rng.random(n_events) < means[rows, actions]).astype(np.float64)
    model = np.clip(means + rng.normal(0.0, 0.05, means.shape), 0.0, 1.0)
    target = np.full((n_events, n_actions), 0.1 / n_actions)
    target[rows, model.argmax(axis=1)] += 0.9
    return SyntheticLog(rewards, actions, logging[rows, actions], target, model)


def run(
    n_events: int = 1_000_000, n_bootstrap: int = 1000, seed: int = 0
) -> list[dict[str, object]]:
    """Time each (estimator, interval) pair once on one synthetic log; one dict per pair."""
    log = synthetic_log(n_events, 5, seed)
    plan: list[tuple[Estimator, str]] = [(e, "wald") for e in ALL_ESTIMATORS]
    plan += [(e, "bootstrap") for e in (IPS(), SNIPS(), DR())]
    plan.append((IPS(), "betting"))
    rows: list[dict[str, object]] = []
    for estimator, interval in plan:
        model = log.reward_model if estimator.uses_reward_model else None
        start = time.perf_counter()
        result = estimate(
            estimator, log.rewards, log.actions, log.propensities, log.target_pmf, model,
            interval=interval, n_bootstrap=n_bootstrap, seed=seed,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        rows.append(
            {
                "bench": "estimators",
                "events": n_events,
                "estimator": result.estimator,
                "interval": interval,
                "resamples": n_bootstrap if interval == "bootstrap" else None,
                "seconds": seconds,
                "value": result.value,
                "lower": result.lower,
                "upper": result.upper,
            }
        )
    return rows


def main() -> list[dict[str, object]]:
    """Run the benchmark and print one line per (estimator, interval)."""
    rows = run()
    print(
        f"{'events':>10}  {'estimator':<10}{'interval':<11}{'seconds':>8}  {'value [lower, upper]'}"
    )
    for row in rows:
        print(
            f"{row['events']:>10,}  {row['estimator']:<10}{row['interval']:<11}"
            f"{row['seconds']:>8.2f}  {row['value']:.4f} [{row['lower']:.4f}, {row['upper']:.4f}]"
        )
    return rows


if __name__ == "__main__":
    main()
