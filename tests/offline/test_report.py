"""HTML and JSON reports, and the evaluate/search/importance command line."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bandit_server.offline.dataset import load_dsjson
from bandit_server.offline.evaluate_cli import main
from bandit_server.offline.evaluation import EvaluationSettings, evaluate
from bandit_server.offline.importance import importance
from bandit_server.offline.replay import LoggedPolicy, UniformRandom, VWLearner
from bandit_server.offline.report import render_html, report_json
from bandit_server.offline.search import SearchGrid, search
from tests.offline.logs import make_log

POLICY = "--cb_explore_adf --epsilon 0.1 -q UA"
GRID = ["--exploration", "--epsilon 0.1", "--interactions", "none", "--interactions", "pairs"]


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "log.jsonl"
    path.write_text("\n".join(make_log(800, seed=13)) + "\n", encoding="utf-8")
    return path


def test_html_is_self_contained_and_escapes_names(log_file: Path) -> None:
    """No scripts, links or external assets; inline SVG charts; user text is escaped."""
    data = load_dsjson(log_file)
    result = evaluate(data, [LoggedPolicy(name="<b>logged</b>"), VWLearner(POLICY)], progress=False)
    page = render_html(result, title="T & <i>")
    assert not re.search(r"<script|https?://|src=|<link", page)
    assert page.count("<svg") >= 2 * len(result.table()) + 1
    assert "<polyline" in page
    assert "&lt;b&gt;logged&lt;/b&gt;" in page and "<b>logged</b>" not in page
    assert "T &amp; &lt;i&gt;" in page


def test_json_holds_every_row_settings_and_versions(log_file: Path) -> None:
    """The JSON document parses strictly (no NaN) and carries rows, settings, curves, versions."""
    data = load_dsjson(log_file)
    settings = EvaluationSettings(estimators=("DR", "IPS"))
    result = evaluate(data, [UniformRandom()], settings, progress=False)
    document = json.loads(json.dumps(report_json(result), allow_nan=False))
    evaluation = document["evaluation"]
    assert len(evaluation["rows"]) == len(result.rows) == 4
    assert evaluation["rows"][0]["value"] == result.rows[0].value
    assert evaluation["settings"]["estimators"] == ["DR", "IPS"]
    assert evaluation["n_skipped"] == data.n_skipped
    assert set(evaluation["curves"]) == set(result.names())
    curve = evaluation["curves"]["uniform random"]
    assert curve["events"][-1] == result.n_estimated
    assert math.isclose(curve["value"][-1], result.row("uniform random").value)
    assert document["versions"]["vowpal_wabbit"].startswith("9.")


def test_search_and_importance_sections_render(log_file: Path) -> None:
    """A search report shows the recommendation and rule; importance adds its table."""
    data = load_dsjson(log_file)
    grid = SearchGrid(explorations=("--epsilon 0.1",), interactions=("none", "pairs"))
    found = search(data, grid, progress=False)
    ranked = importance(data, VWLearner(POLICY), progress=False)
    page = render_html(search=found, importance=ranked)
    assert "Bonferroni" in page and "Feature importance" in page
    assert ("Recommended:" in page) != ("Keep the current policy" in page)
    document = report_json(search=found, importance=ranked)
    assert document["search"]["candidates"] == list(found.candidates)
    assert [row["namespace"] for row in document["importance"]["rows"]] == [
        row.namespace for row in ranked.rows
    ]


def test_cli_evaluate_writes_table_report_and_json(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`evaluate` prints the table and writes both files; exit code 0."""
    report, document = tmp_path / "r.html", tmp_path / "r.json"
    code = main(
        ["evaluate", "--log", str(log_file), "--policy", POLICY, "--policy", "constant:1",
         "--baselines", "--report", str(report), "--json", str(document), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "online (logged)" in out and "--epsilon 0.1 -q UA" in out
    assert "constant action 1" in out and "uniform random" in out
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert len(json.loads(document.read_text())["evaluation"]["rows"]) == 5 * 3


def test_cli_search_and_importance_run(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`search` prints a recommendation line; `importance` its ranked namespaces."""
    assert main(["search", "--log", str(log_file), *GRID, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Recommended:" in out or "Keep the current policy" in out
    code = main(
        ["importance", "--log", str(log_file), "--policy", POLICY, "--namespace", "shared:User",
         "--estimator", "IPS", "--json", str(tmp_path / "i.json"), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert "shared:'User'" in capsys.readouterr().out
    assert json.loads((tmp_path / "i.json").read_text())["importance"]["estimator"] == "IPS"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--log", "missing.json", "--policy", "uniform"], "is not a readable file"),
        (["evaluate", "--log", "LOG", "--policy", "--cb_adf --quiet"], "--policy[0]"),
        (["evaluate", "--log", "LOG"], "give at least one policy"),
        (["evaluate", "--log", "LOG", "--experiment", "x", "--baselines"], "goes with --data-dir"),
        (["evaluate", "--data-dir", "D", "--baselines"], "is required with --data-dir"),
        (["importance", "--log", "LOG", "--policy", "uniform"], "is not a VW command line"),
        (
            ["importance", "--log", "LOG", "--policy", POLICY, "--namespace", "User"],
            "shared:<name>",
        ),
        (["search", "--log", "LOG", "--exploration", "--epsilon x"], "explorations[0]"),
        # VW crashes on these (SIGSEGV/SIGFPE); before, they ended the command without a word.
        (["evaluate", "--log", "LOG", "--policy", "--cb_explore_adf --bag 0"], "crashes VW"),
        (["search", "--log", "LOG", "--exploration", "--bag 0"], "crashes VW"),
        (
            [
                "evaluate",
                "--log",
                "LOG",
                "--policy",
                POLICY,
                "--estimator",
                "DR",
                "--reward-model",
                "--cb_adf --boosting 0",
            ],
            "crashes VW",
        ),
        (["evaluate", "--log", "LOG", "--baselines", "--reward-range", "1", "0"], "reward_range"),
    ],
)
def test_cli_errors_exit_2_with_a_message(
    argv: list[str], message: str, log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input exits with 2 and says what is wrong on stderr."""
    argv = [str(log_file) if a == "LOG" else a for a in argv]
    assert main([*argv, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_cli_reads_the_services_data_dir_through_export(
    monkeypatch: pytest.MonkeyPatch, log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--data-dir/--experiment read lines from bandit_server.export.iter_dsjson."""
    calls: list[tuple[Path, str]] = []

    def fake_iter_dsjson(data_dir: Path, experiment: str) -> Iterator[str]:
        calls.append((data_dir, experiment))
        yield from log_file.read_text().splitlines()

    monkeypatch.setattr("bandit_server.export.iter_dsjson", fake_iter_dsjson)
    argv = ["evaluate", "--data-dir", "/data", "--experiment", "home", "--baselines"]
    assert main([*argv, "--no-progress"]) == 0
    assert calls == [(Path("/data"), "home")]
    learned = int(load_dsjson(log_file).learnable.sum())
    assert f"{learned} events with a reward" in capsys.readouterr().out
