"""Feature importance by ablation: drop one namespace at a time, replay the policy, and report
the change in its estimated value against the same policy with every namespace.

Namespaces are dropped by rebuilding each event's `c` without them, which removes exactly that
namespace's features. VW's `--ignore <letter>` is not used: VW keys namespaces by their first
letter, so it would also drop every other namespace with that letter, shared or action-side.
The letter still matters for interactions: with `-q UA`, dropping "User" leaves "Url" (also
'U') interacting with 'A'. Namespaces sharing a letter are listed in the notes.

The reward model (for DM/DR) keeps every namespace: it is a device of the estimate, fitted
once, so all ablations are measured on the same scale and paired event by event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bandit_server.errors import InvalidArgument
from bandit_server.offline.dataset import DEFAULT_NAMESPACE, LoggedDataset
from bandit_server.offline.evaluation import EvaluationSettings, infer_reward_range, prepare
from bandit_server.offline.paired import Arms, estimator_named, paired_difference
from bandit_server.offline.replay import VWLearner, progress_bar, reward_model, vw_pmfs
from bandit_server.offline.search import namespace_notes

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class NamespaceImportance:
    """The policy's value without one namespace, and the paired change from the full policy.
    `importance` = value with it - value without it: positive means the namespace helps."""

    namespace: str
    scope: str  # "shared" or "action"
    letter: str  # VW's index for it
    value: float
    importance: float
    importance_lower: float
    importance_upper: float


@dataclass(frozen=True)
class ImportanceResult:
    policy: str
    estimator: str
    full_value: float
    rows: tuple[NamespaceImportance, ...]  # most important first
    notes: tuple[str, ...]
    settings: EvaluationSettings
    n_estimated: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "estimator": self.estimator,
            "full_value": self.full_value,
            "n_estimated": self.n_estimated,
            "rows": [
                {
                    "namespace": row.namespace,
                    "scope": row.scope,
                    "letter": row.letter,
                    "value": row.value,
                    "importance": row.importance,
                    "importance_lower": row.importance_lower,
                    "importance_upper": row.importance_upper,
                }
                for row in self.rows
            ],
            "notes": list(self.notes),
            "settings": self.settings.to_dict(),
        }


def drop_namespace(c_json: str, scope: str, namespace: str) -> str:
    """`c` without one namespace: shared (top level) or on every action. The default namespace
    (" ") is every feature given directly rather than inside a namespace object."""
    c = json.loads(c_json)
    if scope == "shared":
        _drop(c, namespace)
    elif scope == "action":
        for action in c["_multi"]:
            _drop(action, namespace)
    else:
        raise InvalidArgument("scope", f"{scope!r} is not 'shared' or 'action'")
    return str(_dumps(c))


def _drop(obj: dict[str, Any], namespace: str) -> None:
    if namespace == DEFAULT_NAMESPACE:
        for key in [k for k, v in obj.items() if not k.startswith("_") and not _is_ns(v)]:
            del obj[key]
    else:
        obj.pop(namespace, None)


def _is_ns(value: object) -> bool:
    return isinstance(value, dict | list)


def importance(
    dataset: LoggedDataset,
    policy: VWLearner,
    settings: EvaluationSettings | None = None,
    *,
    namespaces: Sequence[tuple[str, str]] | None = None,
    progress: bool = True,
) -> ImportanceResult:
    """Drop each (scope, namespace) in turn (default: every namespace in the log) and estimate
    the policy's value without it, paired with the full policy on the same events."""
    settings = settings or EvaluationSettings()
    data = prepare(dataset, settings)
    inventory = data.namespaces
    todo = (
        list(namespaces)
        if namespaces is not None
        else [
            *(("shared", name) for name in inventory.shared),
            *(("action", name) for name in inventory.action),
        ]
    )
    for i, (scope, name) in enumerate(todo):
        known = inventory.shared if scope == "shared" else inventory.action
        if name not in known:
            raise InvalidArgument(
                f"namespaces[{i}]", f"{scope} namespace {name!r} is not in the log ({known})"
            )
    reward_range = settings.reward_range or infer_reward_range(data)
    q = (
        reward_model(data, settings.reward_model_args, reward_range=reward_range, progress=progress)
        if settings.needs_reward_model
        else None
    )
    mask = data.learnable
    arms = Arms(
        data.rewards[mask], data.actions[mask], data.propensities[mask],
        None if q is None else q[mask],
    )  # fmt: skip
    primary = estimator_named(settings.primary)
    full_pmf, _ = vw_pmfs(data, policy.args, progress=progress, desc=policy.name)
    full = arms.terms(primary, full_pmf[mask])
    rows = []
    for scope, name in todo:
        with progress_bar(len(data), f"dropping {scope} {name!r}", progress) as bar:
            c_jsons = []
            for i, c_json in enumerate(data.c_jsons, start=1):
                c_jsons.append(drop_namespace(c_json, scope, name))
                if i % 4096 == 0 or i == len(data):
                    bar.update(i - bar.n)
        pmf, _ = vw_pmfs(data.with_c_jsons(c_jsons), policy.args, progress=progress, desc=name)
        without = arms.terms(primary, pmf[mask])
        change = paired_difference(
            full,
            without,
            interval=settings.difference_interval,
            alpha=settings.alpha,
            n_bootstrap=settings.n_bootstrap,
            seed=settings.seed,
        )
        rows.append(
            NamespaceImportance(
                namespace=name,
                scope=scope,
                letter=name[0],
                value=without.value(),
                importance=change.value,
                importance_lower=change.lower,
                importance_upper=change.upper,
            )
        )
    rows.sort(key=lambda row: row.importance, reverse=True)
    return ImportanceResult(
        policy=policy.name,
        estimator=settings.primary,
        full_value=full.value(),
        rows=tuple(rows),
        notes=tuple(namespace_notes(inventory)),
        settings=settings,
        n_estimated=int(mask.sum()),
    )
