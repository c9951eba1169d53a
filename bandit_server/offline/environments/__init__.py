"""Simulation environments with known ground truth: every round carries E[r|x,a] and the draws."""

from bandit_server.offline.environments.base import Environment, Round
from bandit_server.offline.environments.segments import SegmentEnvironment, default_click_rates
from bandit_server.offline.environments.supervised import DATASETS, SupervisedEnvironment
from bandit_server.offline.environments.synthetic import (
    DEFAULT_CONTEXT,
    ContextNamespace,
    SyntheticEnvironment,
)

__all__ = [
    "DATASETS",
    "DEFAULT_CONTEXT",
    "ContextNamespace",
    "Environment",
    "Round",
    "SegmentEnvironment",
    "SupervisedEnvironment",
    "SyntheticEnvironment",
    "default_click_rates",
]
