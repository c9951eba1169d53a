"""Shared checks: replaying an exported log through a fresh VW."""

from __future__ import annotations

import json
from collections.abc import Iterable

from bandit_server.core.dsjson import prediction_line
from bandit_server.learners.vw import VWPolicy


def normalised(pmf: list[tuple[int, float]]) -> dict[int, float]:
    """The distribution exactly as the server normalises it before drawing."""
    total = sum(p for _, p in pmf)
    return {index: p / total for index, p in pmf}


def logged_distribution(line: dict[str, object]) -> dict[int, float]:
    return {int(a) - 1: float(p) for a, p in zip(line["a"], line["p"], strict=True)}  # type: ignore[call-overload]


def replay(vw_args: str, lines: Iterable[str]) -> tuple[VWPolicy, int, int]:
    """Train a fresh VW on the learned lines in file order; count lines whose served
    distribution the fresh model reproduces exactly just before learning them."""
    policy = VWPolicy(vw_args)
    matched = learned = 0
    for text in lines:
        line = json.loads(text)
        if line.get("_skipLearn"):
            continue
        c_json = json.dumps(line["c"], separators=(",", ":"), ensure_ascii=False)
        predicted = normalised(policy.predict_one(prediction_line(c_json)))
        matched += predicted == logged_distribution(line)
        policy.learn_one(text)
        learned += 1
    return policy, matched, learned
