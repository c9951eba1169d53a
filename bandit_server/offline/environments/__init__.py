"""Simulation environments with known ground truth: every round carries E[r|x,a] and the draws."""

from bandit_server.offline.environments.base import Environment, Round
from bandit_server.offline.environments.segments import SegmentEnvironment, default_click_rates

__all__ = ["Environment", "Round", "SegmentEnvironment", "default_click_rates"]
