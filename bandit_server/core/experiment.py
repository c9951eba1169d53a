"""Experiment settings: one learning loop each. Frozen and validated on construction."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from bandit_server.core.types import MAX_REWARD, check_number, within_reward_limit
from bandit_server.errors import InvalidArgument, describe

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
DEFAULT_REWARD_WAIT_SECONDS = 600.0
MAX_REWARD_WAIT_SECONDS = 30 * 24 * 3600.0


class Aggregation(enum.Enum):
    EARLIEST = "earliest"
    SUM = "sum"


def check_experiment_name(name: str, field: str = "experiment") -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            field,
            f"{describe(name)} is not a safe identifier (a letter, then up to 63 letters, "
            "digits, '_' or '-')",
        )
    return name


def _finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, f"{value!r} is not a finite number")
    return value


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """Validated experiment settings. `vw_args` is checked against VW by the learner module."""

    name: str
    vw_args: str
    reward_wait_seconds: float = DEFAULT_REWARD_WAIT_SECONDS
    default_reward: float = 0.0
    aggregation: Aggregation = Aggregation.EARLIEST
    model_update_interval_seconds: float = 0.0

    def __post_init__(self) -> None:
        check_experiment_name(self.name, "experiment.name")
        wait = _finite("experiment.reward_wait_seconds", self.reward_wait_seconds)
        if not 0 < wait <= MAX_REWARD_WAIT_SECONDS:
            raise InvalidArgument(
                "experiment.reward_wait_seconds",
                f"{wait!r} must be > 0 and at most {MAX_REWARD_WAIT_SECONDS:.0f} (30 days)",
            )
        check_number("experiment.default_reward", self.default_reward, MAX_REWARD)
        interval = _finite(
            "experiment.model_update_interval_seconds", self.model_update_interval_seconds
        )
        if interval < 0:
            raise InvalidArgument(
                "experiment.model_update_interval_seconds", f"{interval!r} must be >= 0"
            )

    def to_json_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "vw_args": self.vw_args,
            "reward_wait_seconds": self.reward_wait_seconds,
            "default_reward": self.default_reward,
            "aggregation": self.aggregation.value,
            "model_update_interval_seconds": self.model_update_interval_seconds,
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, object]) -> ExperimentConfig:
        """Settings as stored. A default_reward stored before the ±MAX_REWARD limit existed is
        brought within it, so the server still starts (and never learns an unsafe cost)."""
        return cls(
            name=str(data["name"]),
            vw_args=str(data["vw_args"]),
            reward_wait_seconds=float(data["reward_wait_seconds"]),  # type: ignore[arg-type]
            default_reward=within_reward_limit(float(data["default_reward"])),  # type: ignore[arg-type]
            aggregation=Aggregation(str(data["aggregation"])),
            model_update_interval_seconds=float(data["model_update_interval_seconds"]),  # type: ignore[arg-type]
        )
