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
    ids = [action for action, _ in pmf]
    weights = [p for _, p in pmf]
    total = sum(weights)
    if not total > 0:
        raise ValueError(f"the model's distribution sums to {total!r}")
    probs = [p / total for p in weights]
    chosen = -1
    cumulative = 0.0
    for position, p in enumerate(probs):
        cumulative += p
        if u < cumulative and p > 0:
            chosen = position
            break
    if chosen < 0:  # u fell past the rounded total: the last action with any mass
        chosen = max(i for i, p in enumerate(probs) if p > 0)
    after = chosen + 1
    return (
        (ids[chosen], *ids[:chosen], *ids[after:]),
        (probs[chosen], *probs[:chosen], *probs[after:]),
    )
