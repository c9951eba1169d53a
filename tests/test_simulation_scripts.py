"""The scripts that drive a live server run end to end (small sizes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.server import ServerThread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulations"))

import drive_server
import evaluate_live_log


def test_drive_server_learns_against_a_running_server(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """drive_server.py talks to a live server and prints one curve point per window."""
    target = f"127.0.0.1:{server.app.port}"  # type: ignore[union-attr]
    assert drive_server.main(["--target", target, "--events", "400", "--window", "200"]) == 0
    out = capsys.readouterr().out
    assert "oracle click rate" in out and "     200 " in out and "     400 " in out


def test_drive_server_says_what_the_server_answered_instead_of_a_traceback(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refusal mid-run (here: bad vw_args at create; a server stopping answers the same
    way) ends the script with the status and the server's words."""
    target = f"127.0.0.1:{server.app.port}"  # type: ignore[union-attr]
    code = drive_server.main(
        ["--target", target, "--experiment", "bad-args", "--vw-args=--no-such-option"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("the server answered INVALID_ARGUMENT: ") and "vw_args" in err


def test_evaluate_live_log_evaluates_what_the_server_logged(tmp_path: Path) -> None:
    """evaluate_live_log.py serves traffic, stops the server, and evaluates its log."""
    result = tmp_path / "result.json"
    code = evaluate_live_log.main(
        ["--events", "300", "--data-dir", str(tmp_path / "data"), "--json", str(result)]
    )
    assert code == 0
    document = json.loads(result.read_text())
    assert document["evaluation"]["n_events"] == 300  # every served decision was evaluated
    text = json.dumps(document)
    assert "--squarecb -q UA" in text and "uniform" in text
