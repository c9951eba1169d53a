"""A small environment with known ground truth: user segments x content variants, Bernoulli clicks.

Each segment has its own best variant, so a policy must use the context to do well. Seeded:
the same seed gives the same users and the same click draws, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bandit_server.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class SegmentRound:
    index: int
    segment: str
    context: dict[str, dict[str, str | float | bool]]
    actions: tuple[dict[str, object], ...]
    click_rates: tuple[float, ...]  # ground truth per variant
    clicks: tuple[float, ...]  # the realised reward each variant would get this round
    best_action: int


def _default_rates(n_segments: int, n_variants: int) -> tuple[tuple[float, ...], ...]:
    rates = []
    for s in range(n_segments):
        row = [0.1 + 0.02 * ((v + s) % n_variants) for v in range(n_variants)]
        row[(2 * s) % n_variants] = 0.6
        rates.append(tuple(row))
    return tuple(rates)


@dataclass(frozen=True)
class SegmentEnvironment:
    """`click_rates[s][v]`: probability that segment s clicks variant v."""

    n_segments: int = 3
    n_variants: int = 5
    click_rates: tuple[tuple[float, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.n_segments < 1:
            raise InvalidArgument("n_segments", f"{self.n_segments!r} must be >= 1")
        if self.n_variants < 2:
            raise InvalidArgument("n_variants", f"{self.n_variants!r} must be >= 2")
        if not self.click_rates:
            object.__setattr__(
                self, "click_rates", _default_rates(self.n_segments, self.n_variants)
            )
        if len(self.click_rates) != self.n_segments or any(
            len(row) != self.n_variants for row in self.click_rates
        ):
            raise InvalidArgument(
                "click_rates", f"must be {self.n_segments} rows of {self.n_variants} rates"
            )
        for s, row in enumerate(self.click_rates):
            for v, rate in enumerate(row):
                if not 0.0 <= rate <= 1.0:
                    raise InvalidArgument(f"click_rates[{s}][{v}]", f"{rate!r} is not in [0, 1]")

    def actions(self) -> tuple[dict[str, object], ...]:
        return tuple(
            {"id": f"v{v}", "features": {"Action": {"variant": f"v{v}"}}}
            for v in range(self.n_variants)
        )

    def rounds(self, n: int, seed: int) -> Iterator[SegmentRound]:
        rng = np.random.default_rng(seed)
        segments = rng.integers(0, self.n_segments, size=n)
        draws = rng.random(size=(n, self.n_variants))
        actions = self.actions()
        for i in range(n):
            s = int(segments[i])
            rates = self.click_rates[s]
            yield SegmentRound(
                index=i,
                segment=f"s{s}",
                context={"User": {"segment": f"s{s}"}},
                actions=actions,
                click_rates=rates,
                clicks=tuple(float(d < r) for d, r in zip(draws[i], rates, strict=True)),
                best_action=int(np.argmax(rates)),
            )
