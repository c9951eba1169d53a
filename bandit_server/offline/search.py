"""Policy search: evaluate a grid of VW settings on a log and recommend one only when the log
shows it beats the logged policy.

The rule, precisely: with m VW candidates, each candidate's paired difference to the logged
policy (primary estimator, per-event pseudo-outcomes) gets a two-sided interval at level
alpha / m (Bonferroni, so that the chance any recommendation is a false win stays below alpha
under the interval's own assumptions). Candidates whose lower bound is > 0 qualify; the one
with the highest estimate is recommended. If none qualifies: keep the current policy.
The winner's estimate is optimistic (it was chosen for being high); read its interval, not
its point value, as the expected gain.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bandit_server.errors import InvalidArgument, describe
from bandit_server.learners.vw import validate_args
from bandit_server.offline.dataset import DEFAULT_NAMESPACE, LoggedDataset, NamespaceInventory
from bandit_server.offline.evaluation import (
    Evaluation,
    EvaluationSettings,
    evaluate,
    infer_reward_range,
    prepare,
    with_reference,
)
from bandit_server.offline.paired import Arms, estimator_named, paired_difference
from bandit_server.offline.replay import (
    BASELINE_CANDIDATES,
    Candidate,
    VWLearner,
    replay,
    reward_model,
)

INTERACTION_KEYWORDS = ("none", "pairs", "all")
CB_TYPES = ("ips", "dr", "mtr")


# The default grid, as constants: the command line's help shows them without checking them
# (SearchGrid() tries each exploration in a child process, ~0.3 s each).
DEFAULT_EXPLORATIONS: tuple[str, ...] = (
    "--epsilon 0.05",
    "--epsilon 0.2",
    "--squarecb --gamma_scale 10",
    "--cover 3",
    "--bag 5",
    "--softmax --lambda 10",
)
DEFAULT_INTERACTIONS: tuple[str, ...] = ("none", "pairs", "all")
DEFAULT_LEARNING_RATES: tuple[float, ...] = (0.5,)
DEFAULT_CB_TYPES: tuple[str, ...] = ("mtr",)


@dataclass(frozen=True)
class SearchGrid:
    """The VW settings to try: every combination of one exploration, one interaction set, one
    learning rate and one cb_type (combinations VW rejects, e.g. squarecb with ips, are skipped
    and listed). Interactions: "none"; "pairs" = `-q XY` for every shared namespace X and action
    namespace Y found in the log (by first letter, as VW indexes namespaces); "all" = `-q ::`;
    or explicit options such as "-q UA -q GA"."""

    explorations: tuple[str, ...] = DEFAULT_EXPLORATIONS
    interactions: tuple[str, ...] = DEFAULT_INTERACTIONS
    learning_rates: tuple[float, ...] = DEFAULT_LEARNING_RATES
    cb_types: tuple[str, ...] = DEFAULT_CB_TYPES

    def __post_init__(self) -> None:
        for name in ("explorations", "interactions", "learning_rates", "cb_types"):
            values = getattr(self, name)
            if not values:
                raise InvalidArgument(name, "is empty; give at least one value")
            if len(set(values)) != len(values):
                raise InvalidArgument(name, f"{list(values)!r} repeats a value")
        for i, text in enumerate(self.explorations):
            tokens = _tokens(f"explorations[{i}]", text)
            if "--cb_explore_adf" in tokens or "--cb_type" in tokens or "-q" in tokens:
                raise InvalidArgument(
                    f"explorations[{i}]",
                    f"{text!r}: give only the exploration options (the grid adds the rest)",
                )
            validate_args(f"--cb_explore_adf {text}", f"explorations[{i}]", isolate=True)
        for i, text in enumerate(self.interactions):
            if text not in INTERACTION_KEYWORDS:
                validate_args(f"--cb_explore_adf {text}", f"interactions[{i}]", isolate=True)
        for i, rate in enumerate(self.learning_rates):
            if isinstance(rate, bool) or not (isinstance(rate, int | float) and rate > 0):
                raise InvalidArgument(f"learning_rates[{i}]", f"{describe(rate)} is not > 0")
            if not math.isfinite(rate):
                raise InvalidArgument(f"learning_rates[{i}]", f"{rate!r} is not finite")
        for i, cb_type in enumerate(self.cb_types):
            if cb_type not in CB_TYPES:
                raise InvalidArgument(f"cb_types[{i}]", f"{describe(cb_type)} is not in {CB_TYPES}")

    @property
    def size(self) -> int:
        return (
            len(self.explorations)
            * len(self.interactions)
            * len(self.learning_rates)
            * len(self.cb_types)
        )

    def command_lines(self, namespaces: NamespaceInventory) -> tuple[list[str], list[str]]:
        """(VW command lines to evaluate, notes on combinations VW rejects)."""
        lines: list[str] = []
        rejected: list[str] = []
        for exploration, interaction, rate, cb_type in itertools.product(
            self.explorations, self.interactions, self.learning_rates, self.cb_types
        ):
            parts = ["--cb_explore_adf", exploration, "--cb_type", cb_type]
            quadratic = interaction_options(interaction, namespaces)
            if quadratic:
                parts.append(quadratic)
            parts += ["-l", f"{rate:g}"]
            args = " ".join(parts)
            try:
                normalised = validate_args(args)
            except InvalidArgument as exc:
                rejected.append(str(exc))
                continue
            if normalised not in lines:
                lines.append(normalised)
        return lines, rejected


def _tokens(field_name: str, text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise InvalidArgument(field_name, f"{describe(text)}: {exc}") from None


def interaction_options(interaction: str, namespaces: NamespaceInventory) -> str:
    """VW options for an interaction keyword ("none", "pairs", "all") or explicit options."""
    if interaction == "none":
        return ""
    if interaction == "all":
        return "-q ::"
    if interaction != "pairs":
        return interaction
    pairs: dict[str, None] = {}
    for shared in namespaces.shared:
        for action in namespaces.action:
            pairs.setdefault(shared[0] + action[0], None)
    return " ".join(f"-q {shlex.quote(pair)}" for pair in pairs)


def first_letter_groups(namespaces: NamespaceInventory) -> dict[str, list[str]]:
    """Namespaces that share a first letter, which VW treats as one index for -q, --ignore and
    the like (their features still hash apart, by full name)."""
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys((*namespaces.shared, *namespaces.action)):
        groups.setdefault(name[0], []).append(name)
    return {letter: names for letter, names in groups.items() if len(names) > 1}


def namespace_notes(namespaces: NamespaceInventory) -> list[str]:
    notes = []
    for letter, names in first_letter_groups(namespaces).items():
        shown = ", ".join("(default)" if n == DEFAULT_NAMESPACE else repr(n) for n in names)
        notes.append(
            f"namespaces {shown} share VW's index {letter!r}: interactions such as -q "
            f"{letter}X treat them as one namespace"
        )
    return notes


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The search's advice: a VW command line, or None to keep the current (logged) policy."""

    args: str | None
    policy: str | None
    estimate: float
    difference: float
    difference_lower: float  # at level alpha / m (Bonferroni)
    rule: str


@dataclass(frozen=True)
class SearchResult:
    evaluation: Evaluation
    grid: SearchGrid
    candidates: tuple[str, ...]
    rejected: tuple[str, ...]
    adjusted_lower: dict[str, float]  # per VW candidate: paired difference lower bound at alpha/m
    recommendation: Recommendation
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": {
                "explorations": list(self.grid.explorations),
                "interactions": list(self.grid.interactions),
                "learning_rates": list(self.grid.learning_rates),
                "cb_types": list(self.grid.cb_types),
            },
            "candidates": list(self.candidates),
            "rejected": list(self.rejected),
            "adjusted_difference_lower": self.adjusted_lower,
            "recommendation": {
                "args": self.recommendation.args,
                "policy": self.recommendation.policy,
                "estimate": self.recommendation.estimate,
                "difference": self.recommendation.difference,
                "difference_lower": self.recommendation.difference_lower,
                "rule": self.recommendation.rule,
            },
            "notes": list(self.notes),
        }


def search(
    dataset: LoggedDataset,
    grid: SearchGrid | None = None,
    settings: EvaluationSettings | None = None,
    *,
    extra: Sequence[Candidate] = BASELINE_CANDIDATES,
    progress: bool = True,
    workers: int = 1,
) -> SearchResult:
    """Evaluate every grid policy (plus the logged policy and `extra` fixed ones for context)
    and recommend by the rule in this module's docstring. `workers` > 1 replays the grid in
    that many parallel processes."""
    grid = grid or SearchGrid()
    settings = settings or EvaluationSettings()
    data = prepare(dataset, settings)
    lines, rejected = grid.command_lines(data.namespaces)
    if not lines:
        raise InvalidArgument("grid", "VW rejects every combination: " + "; ".join(rejected))
    vw_candidates = [VWLearner(args) for args in lines]
    candidates = with_reference([*extra, *vw_candidates])
    replayed = replay(data, candidates, progress=progress, workers=workers)
    reward_range = settings.reward_range or infer_reward_range(data)
    q = (
        reward_model(data, settings.reward_model_args, reward_range=reward_range, progress=progress)
        if settings.needs_reward_model
        else None
    )
    # `data` is already in the settings' order; evaluate must not reorder it again.
    file_order = dataclasses.replace(settings, order="file")
    evaluation = evaluate(
        data, candidates, file_order, progress=progress, replayed=replayed, rewards_model=q
    )
    mask = data.learnable
    arms = Arms(
        data.rewards[mask],
        data.actions[mask],
        data.propensities[mask],
        None if q is None else q[mask],
    )
    primary = estimator_named(settings.primary)
    base = arms.terms(primary, replayed.pmfs[evaluation.reference][mask])
    alpha = settings.alpha / len(vw_candidates)
    adjusted: dict[str, float] = {}
    for candidate in vw_candidates:
        adjusted[candidate.name] = paired_difference(
            arms.terms(primary, replayed.pmfs[candidate.name][mask]),
            base,
            interval=settings.difference_interval,
            alpha=alpha,
            n_bootstrap=settings.n_bootstrap,
            seed=settings.seed,
        ).lower
    return SearchResult(
        evaluation=evaluation,
        grid=grid,
        candidates=tuple(lines),
        rejected=tuple(rejected),
        adjusted_lower=adjusted,
        recommendation=_recommend(evaluation, adjusted, settings, len(vw_candidates)),
        notes=tuple(namespace_notes(data.namespaces)),
    )


def _recommend(
    evaluation: Evaluation, adjusted: dict[str, float], settings: EvaluationSettings, m: int
) -> Recommendation:
    rule = (
        f"recommend the VW candidate with the highest {settings.primary} estimate among those "
        f"whose paired difference to the logged policy has a lower bound > 0 at level "
        f"alpha/m = {settings.alpha:g}/{m} (Bonferroni over the {m} candidates); otherwise keep "
        "the current policy"
    )
    qualified = [
        row for row in evaluation.table() if row.policy in adjusted and adjusted[row.policy] > 0.0
    ]
    if not qualified:
        reference = evaluation.row(evaluation.reference)
        return Recommendation(None, None, reference.value, 0.0, 0.0, rule)
    best = max(qualified, key=lambda row: row.value)
    return Recommendation(
        best.args, best.policy, best.value, best.difference, adjusted[best.policy], rule
    )
