"""Policy search (grid, recommendation rule) and namespace importance by ablation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bandit_server.cli import build_parser, main
from bandit_server.errors import InvalidArgument
from bandit_server.learners import vw_probe
from bandit_server.offline import evaluate_cli
from bandit_server.offline.dataset import NamespaceInventory, load_dsjson
from bandit_server.offline.evaluation import EvaluationSettings
from bandit_server.offline.importance import drop_namespace, importance
from bandit_server.offline.replay import VWLearner
from bandit_server.offline.search import (
    SearchGrid,
    first_letter_groups,
    interaction_options,
    namespace_notes,
    search,
)
from tests.offline.logs import make_log

SMALL_GRID = SearchGrid(
    explorations=("--epsilon 0.05", "--squarecb --gamma_scale 10"),
    interactions=("none", "pairs"),
    cb_types=("mtr", "ips"),
)
INVENTORY = NamespaceInventory(shared=("User", "Geo"), action=("Action",))


def test_default_grid_is_modest() -> None:
    """The default grid has at most 24 policies, all of which VW accepts."""
    grid = SearchGrid()
    assert grid.size <= 24
    lines, rejected = grid.command_lines(INVENTORY)
    assert len(lines) == grid.size and not rejected


def test_pairs_interactions_come_from_the_logs_namespaces_by_first_letter() -> None:
    """'pairs' makes -q for each shared x action first letter, once per letter pair."""
    assert interaction_options("pairs", INVENTORY) == "-q UA -q GA"
    doubled = NamespaceInventory(shared=("User", "Url", " "), action=("Action",))
    assert interaction_options("pairs", doubled) == "-q UA -q ' A'"
    assert interaction_options("all", INVENTORY) == "-q ::"
    assert interaction_options("none", INVENTORY) == ""
    assert interaction_options("-q GA", INVENTORY) == "-q GA"


def test_namespaces_sharing_a_first_letter_are_reported() -> None:
    """Namespaces with one first letter share VW's index; the notes say so."""
    inventory = NamespaceInventory(shared=("User", "Url"), action=("Action", "Ad"))
    assert first_letter_groups(inventory) == {"U": ["User", "Url"], "A": ["Action", "Ad"]}
    notes = namespace_notes(inventory)
    assert len(notes) == 2 and "'User', 'Url' share VW's index 'U'" in notes[0]


def test_combinations_vw_rejects_are_skipped_and_listed() -> None:
    """squarecb only supports cb_type mtr: its ips variants are listed as rejected."""
    lines, rejected = SMALL_GRID.command_lines(INVENTORY)
    assert len(lines) == SMALL_GRID.size - 2
    assert len(rejected) == 2 and all("squarecb" in text for text in rejected)
    assert "--cb_explore_adf --epsilon 0.05 --cb_type ips -q UA -q GA -l 0.5" in lines


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"explorations": ()}, "explorations"),
        ({"explorations": ("--epsilon 0.1", "--epsilon 0.1")}, "explorations"),
        ({"explorations": ("--cb_explore_adf --epsilon 0.1",)}, "explorations[0]"),
        ({"explorations": ("--epsilon nope",)}, "explorations[0]"),
        ({"interactions": ("-q",)}, "interactions[0]"),
        ({"learning_rates": (0.0,)}, "learning_rates[0]"),
        ({"cb_types": ("dm",)}, "cb_types[0]"),
    ],
)
def test_bad_grids_name_the_field(kwargs: dict[str, object], field: str) -> None:
    """A bad grid value raises InvalidArgument naming the field and index."""
    with pytest.raises(InvalidArgument) as info:
        SearchGrid(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_search_recommends_a_contextual_policy_over_a_random_logger() -> None:
    """A random logger leaves much to gain: the best qualifying candidate is recommended and
    its corrected lower bound is above 0 and below its uncorrected one."""
    data = load_dsjson(make_log(3000, seed=7))
    result = search(data, SMALL_GRID, progress=False)
    rec = result.recommendation
    assert rec.args is not None and "-q UA" in rec.args
    assert rec.difference_lower > 0
    row = result.evaluation.row(rec.args)
    assert rec.difference_lower < row.difference_lower
    qualified = [name for name, low in result.adjusted_lower.items() if low > 0]
    best = max(qualified, key=lambda name: result.evaluation.row(name).value)
    assert rec.args == best
    json.dumps(result.to_dict())


def test_search_keeps_the_current_policy_when_nothing_beats_it() -> None:
    """A logger already playing the good action 90% of the time is not beaten significantly."""
    data = load_dsjson(make_log(1500, seed=8, good_logger=True))
    result = search(data, SMALL_GRID, progress=False)
    assert result.recommendation.args is None
    assert all(low <= 0 for low in result.adjusted_lower.values())
    assert "keep the current policy" in result.recommendation.rule


def test_drop_namespace_removes_exactly_that_namespace() -> None:
    """Shared, action-side and default-namespace features are removed; the rest is unchanged."""
    multi = '"_multi":[{"Action":{"v":1},"g":"x"},{"Action":{"v":2}}]'
    c = '{"f":1,"User":{"a":1},"Geo":{"b":2},' + multi + "}"
    assert drop_namespace(c, "shared", "User") == '{"f":1,"Geo":{"b":2},' + multi + "}"
    assert drop_namespace(c, "shared", " ") == '{"User":{"a":1},"Geo":{"b":2},' + multi + "}"
    assert json.loads(drop_namespace(c, "action", "Action"))["_multi"] == [{"g": "x"}, {}]
    assert json.loads(drop_namespace(c, "action", " "))["_multi"][0] == {"Action": {"v": 1}}


def test_importance_finds_the_namespaces_the_reward_depends_on() -> None:
    """Rewards depend on User and Action only: both matter (lower bound > 0), Geo does not
    (its interval contains 0), and rows come most important first."""
    data = load_dsjson(make_log(3000, seed=9))
    policy = VWLearner("--cb_explore_adf --epsilon 0.05 -q UA -q GA")
    result = importance(data, policy, EvaluationSettings(estimators=("DR",)), progress=False)
    rows = {row.namespace: row for row in result.rows}
    assert set(rows) == {"User", "Geo", "Action"}
    assert rows["User"].importance_lower > 0 and rows["Action"].importance_lower > 0
    assert rows["Geo"].importance_lower <= 0 <= rows["Geo"].importance_upper
    values = [row.importance for row in result.rows]
    assert values == sorted(values, reverse=True)
    assert rows["User"].value == pytest.approx(result.full_value - rows["User"].importance)
    assert np.isfinite(result.full_value)


def test_importance_checks_the_namespaces_asked_for() -> None:
    """Asking to drop a namespace the log does not have names it."""
    data = load_dsjson(make_log(50, seed=1))
    with pytest.raises(InvalidArgument, match="'Nope' is not in the log"):
        importance(
            data,
            VWLearner("--cb_explore_adf"),
            namespaces=[("shared", "Nope")],
            progress=False,
        )


def test_the_command_line_is_built_without_trying_vw_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building the parser checked the default search grid, one child process per exploration:
    every command, `serve` and `export` too, spent ~2.5 s on it before starting."""

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child process was started")

    monkeypatch.setattr(vw_probe.subprocess, "run", no_child)
    parser = build_parser()
    assert parser.parse_args(["export", "--data-dir", "d", "--experiment", "x"]).command == "export"


@pytest.mark.parametrize("option", ["--report", "--json"])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_evaluation(
    tmp_path: Path, option: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A report in a missing directory, or a directory as the report, fails at once (exit 2,
    the option named), not after a long evaluation, and leaves nothing behind."""
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(make_log(50, 0)) + "\n")

    def no_evaluation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the evaluation ran")

    monkeypatch.setattr(evaluate_cli, "evaluate", no_evaluation)
    for target, reason in (
        (tmp_path / "missing" / "out", "does not exist"),
        (tmp_path, "is a directory"),
    ):
        code = main(["evaluate", "--baselines", "--log", str(log), option, str(target)])
        assert code == 2
        err = capsys.readouterr().err
        assert f"{option}: {str(target)!r}" in err and reason in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["log.jsonl"]
