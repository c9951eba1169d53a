"""User segments x content variants with Bernoulli clicks: each segment has its own best variant."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from bandit_server.errors import InvalidArgument
from bandit_server.offline.environments.base import (
    Round,
    check_count,
    check_positive,
    check_run,
    per_round,
)

BEST_RATE = 0.6


def default_click_rates(n_segments: int, n_variants: int) -> tuple[tuple[float, ...], ...]:
    """Segment s clicks variant (2s) mod n_variants at 0.6 and the others at 0.1 to 0.2."""
    rows = []
    for s in range(n_segments):
        row = [
            0.1 + 0.1 * ((v + s) % n_variants) / max(n_variants - 1, 1) for v in range(n_variants)
        ]
        row[(2 * s) % n_variants] = BEST_RATE
        rows.append(tuple(row))
    return tuple(rows)


@dataclass(frozen=True)
class SegmentEnvironment:
    """Users arrive from `n_segments` equally likely segments; `click_rates[s][v]` is the
    probability that a user of segment s clicks variant v (reward 1, else 0).

    Context {"User": {"segment": "s0"}}, actions {"Action": {"variant": "v0"}}, so VW's `-q UA`
    crosses them. Defaults: `default_click_rates`. Rounds are `seconds_between_rounds` apart.
    """

    n_segments: int = 3
    n_variants: int = 5
    click_rates: tuple[tuple[float, ...], ...] | None = None
    seconds_between_rounds: float = 1.0

    def __post_init__(self) -> None:
        check_count("n_segments", self.n_segments, 1)
        check_count("n_variants", self.n_variants, 2)
        check_positive("seconds_between_rounds", self.seconds_between_rounds)
        if self.click_rates is None:
            rates = default_click_rates(self.n_segments, self.n_variants)
        else:
            rates = tuple(tuple(float(r) for r in row) for row in self.click_rates)
        if len(rates) != self.n_segments:
            raise InvalidArgument(
                "click_rates", f"has {len(rates)} rows; n_segments is {self.n_segments}"
            )
        for s, row in enumerate(rates):
            if len(row) != self.n_variants:
                raise InvalidArgument(
                    f"click_rates[{s}]", f"has {len(row)} rates; n_variants is {self.n_variants}"
                )
            for v, rate in enumerate(row):
                if not 0.0 <= rate <= 1.0:
                    raise InvalidArgument(f"click_rates[{s}][{v}]", f"{rate!r} is not in [0, 1]")
        object.__setattr__(self, "click_rates", rates)

    @property
    def name(self) -> str:
        return f"segments({self.n_segments}x{self.n_variants})"

    @property
    def n_actions(self) -> int:
        return self.n_variants

    def actions(self) -> tuple[dict[str, Any], ...]:
        """The variants as plain-dict actions, in index order."""
        return tuple(
            {"id": f"v{v}", "features": {"Action": {"variant": f"v{v}"}}}
            for v in range(self.n_variants)
        )

    def rounds(self, n: int, seed: int) -> Iterator[Round]:
        check_run(n, seed)
        assert self.click_rates is not None
        rates = np.array(self.click_rates, dtype=np.float64)
        rates.flags.writeable = False
        best = [int(np.argmax(row)) for row in rates]
        zeros = np.zeros(self.n_variants)
        zeros.flags.writeable = False
        actions = self.actions()
        k = self.n_variants

        def draw(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
            return {
                "segment": rng.integers(0, self.n_segments, size=size),
                "uniform": rng.random((size, k)),
            }

        draws = per_round(np.random.SeedSequence(seed), draw)
        for i in range(n):
            row = next(draws)
            s = int(row["segment"])
            yield Round(
                index=i,
                time=i * float(self.seconds_between_rounds),
                context={"User": {"segment": f"s{s}"}},
                actions=actions,
                expected_rewards=rates[s],
                rewards=(row["uniform"] < rates[s]).astype(np.float64),
                delays=zeros,
                best_action=best[s],
                info={"segment": f"s{s}"},
            )
