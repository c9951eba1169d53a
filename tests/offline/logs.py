"""Seeded DSJSON logs for the offline tests: ragged action sets, skipped events, known rewards."""

from __future__ import annotations

import numpy as np

from bandit_server.core.dsjson import DecisionRecord, Label, context_json, export_line
from bandit_server.core.types import Action, Feature, Namespace

SEGMENTS = 3


def click_rate(segment: int, action: int) -> float:
    """Ground truth of `make_log`: each segment has one good action."""
    return 0.7 if action == segment else 0.2


def make_log(
    n: int,
    seed: int,
    *,
    min_actions: int = 3,
    max_actions: int = 5,
    skip_share: float = 0.1,
    good_logger: bool = False,
) -> list[str]:
    """Lines as the service exports them (seeded), logged by a random policy, or with
    `good_logger` by one that gives the segment's good action 0.9 (the rest share 0.1)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        segment = int(rng.integers(SEGMENTS))
        k = int(rng.integers(min_actions, max_actions + 1))
        context = (
            Namespace(
                "User", (Feature("segment", f"s{segment}"), Feature("age", float(rng.random())))
            ),
            Namespace("Geo", (Feature("country", f"c{int(rng.integers(4))}"),)),
        )
        actions = tuple(
            Action(f"v{j}", (Namespace("Action", (Feature("variant", f"v{j}"),)),))
            for j in range(k)
        )
        pmf = rng.dirichlet(np.ones(k))
        if good_logger:
            pmf = np.full(k, 0.1 / (k - 1))
            pmf[segment] = 0.9
        chosen = int(rng.choice(k, p=pmf))
        order = (chosen, *(j for j in range(k) if j != chosen))
        reward = float(rng.random() < click_rate(segment, chosen))
        skipped = bool(rng.random() < skip_share)
        label = None if skipped else Label(chosen, float(pmf[chosen]), -reward)
        lines.append(
            export_line(
                DecisionRecord(
                    event_id=f"e{i}",
                    timestamp=f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000000Z",
                    c_json=context_json(context, actions),
                    ranking_indices=order,
                    ranking_probabilities=tuple(float(pmf[j]) for j in order),
                    model_version="m1",
                    label=label,
                )
            )
        )
    return lines
