"""The small protocol every learning policy speaks; only `learners/` knows what implements it."""

from __future__ import annotations

from typing import Protocol

# One entry per candidate action: (index into the example's `_multi` list, probability),
# in the model's order of preference.
Pmf = list[tuple[int, float]]


class Policy(Protocol):
    """A contextual-bandit learner over DSJSON lines (the one way examples are built)."""

    @property
    def args(self) -> str:
        """The command line the policy was made with."""
        ...

    def predict_one(self, dsjson_line: str) -> Pmf:
        """The probability distribution over the line's actions; does not learn."""
        ...

    def learn_one(self, dsjson_line: str) -> None:
        """Learn from one labelled line (labels must precede `c` in the text)."""
        ...

    def serialize(self) -> bytes:
        """The model as bytes that `load` turns back into an identical policy."""
        ...
