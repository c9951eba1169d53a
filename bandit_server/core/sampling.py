"""Drawing the served action from the model's distribution, reproducibly per event."""

from __future__ import annotations

import hashlib

from bandit_server.core.policy import Pmf


def event_uniform(experiment: str, event_id: str) -> float:
    """A uniform number in [0, 1) fixed by (experiment, event_id): the event's random seed."""
    digest = hashlib.blake2b(
        experiment.encode() + b"\x00" + event_id.encode(), digest_size=8
    ).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def draw(pmf: Pmf, u: float) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(ranking, probabilities): the drawn action first, then the rest in the model's order.

    Probabilities are normalised to sum to 1 in float64 before drawing, and those exact numbers
    are returned, so what is logged is exactly what the draw used.
    """
    total = sum(p for _, p in pmf)
    if not total > 0:
        raise ValueError(f"the model's distribution sums to {total!r}")
    probs = [p / total for _, p in pmf]
    chosen = -1
    cumulative = 0.0
    for position, p in enumerate(probs):
        cumulative += p
        if u < cumulative and p > 0:
            chosen = position
            break
    if chosen < 0:  # u fell past the rounded total: the last action with any mass
        chosen = max(i for i, p in enumerate(probs) if p > 0)
    order = [chosen] + [i for i in range(len(pmf)) if i != chosen]
    return tuple(pmf[i][0] for i in order), tuple(probs[i] for i in order)
