"""Rows of the decision log, as plain frozen values shared by every storage implementation."""

from __future__ import annotations

from dataclasses import dataclass


class DuplicateDecision(Exception):
    """The log already holds a decision with this experiment and event id."""


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One Rank, with everything offline evaluation needs."""

    experiment: str
    event_id: str
    timestamp: float  # seconds since the epoch, UTC
    deadline: float  # end of the reward window
    user_id: str
    deferred: bool
    c_json: str  # the exact DSJSON `c` text the model predicted on (candidates only)
    action_ids: tuple[str, ...]  # candidate ids in `_multi` order
    excluded_json: str  # JSON list of excluded actions with their features; "[]" when none
    ranking: tuple[int, ...]  # `_multi` indices, chosen first, then model preference
    probabilities: tuple[float, ...]  # aligned with `ranking`
    model_version: str

    @property
    def chosen_index(self) -> int:
        return self.ranking[0]

    @property
    def chosen_probability(self) -> float:
        return self.probabilities[0]


@dataclass(frozen=True, slots=True)
class RewardRow:
    experiment: str
    event_id: str
    timestamp: float
    value: float
    late: bool


@dataclass(frozen=True, slots=True)
class ActivationRow:
    experiment: str
    event_id: str
    timestamp: float
    late: bool


@dataclass(frozen=True, slots=True)
class LearnedRow:
    """An event the learner learned, in learning order; `seq` is its position in that order."""

    experiment: str
    event_id: str
    cost: float
    timestamp: float
    seq: int = 0  # assigned by the log on commit


@dataclass(frozen=True, slots=True)
class WatermarkRow:
    """Every decision of the experiment with a deadline at or before `closed_until` is closed."""

    experiment: str
    closed_until: float


@dataclass(frozen=True, slots=True)
class DeleteExperimentRow:
    """Deletes every row of the experiment committed before it, and the experiment itself."""

    experiment: str


@dataclass(frozen=True, slots=True)
class LearnItem:
    """What the learner needs to learn one event: its example text and label."""

    seq: int
    event_id: str
    c_json: str
    chosen_index: int
    probability: float
    cost: float


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    name: str
    config_json: str
    epoch: str  # random per creation, so versions never repeat across delete and re-create
    created_at: float
    updated_at: float
