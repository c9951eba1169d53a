"""`bandit-server export` as a user runs it: a real process over a real log, to standard
output, to a file, and into a reader that stops early (`| head`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bandit_server.cli import EXIT_BROKEN_PIPE
from bandit_server.core.experiment import Aggregation
from bandit_server.engine.engine import Engine
from bandit_server.export import iter_dsjson
from tests.test_reward_windows import Clock, config, rank, run

DECISIONS = 1_500  # ~0.5 MB of DSJSON: more than a pipe holds, so a closed reader is met


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "data"

    async def scenario(engine: Engine, clock: Clock) -> None:
        await engine.create_experiment(config(Aggregation.EARLIEST))
        for i in range(DECISIONS):
            await rank(engine, f"e{i}")
        for i in range(0, DECISIONS, 3):
            await engine.reward("w", f"e{i}", 1.0)

    run(path, scenario)
    return path


def _export(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bandit_server", "export", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,  # type: ignore[call-overload]
    )


def test_export_writes_every_decision_to_standard_output(data_dir: Path) -> None:
    process = _export("--data-dir", str(data_dir), "--experiment", "w")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    lines = out.decode().splitlines()
    assert lines == list(iter_dsjson(data_dir, "w"))
    assert len(lines) == DECISIONS
    assert sum('"_skipLearn":true' in line for line in lines) == DECISIONS - DECISIONS // 3


def test_export_to_a_file_leaves_only_the_file(data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "w.dsjson"
    process = _export("--data-dir", str(data_dir), "--experiment", "w", "--output", str(target))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out == b""
    assert target.read_text().splitlines() == list(iter_dsjson(data_dir, "w"))
    assert [path.name for path in tmp_path.iterdir()] == ["w.dsjson"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not mkstemp's


def test_export_into_a_reader_that_stops_early_ends_quietly(data_dir: Path) -> None:
    """As `bandit-server export ... | head -2` in the README's tour: no traceback, and the exit
    status a shell tool ended by SIGPIPE gives."""
    process = _export("--data-dir", str(data_dir), "--experiment", "w")
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    assert first.startswith(b"{")
    process.stdout.close()
    err = process.stderr.read()
    process.wait(timeout=120)
    assert b"Traceback" not in err and b"Error" not in err, err.decode()
    assert process.returncode == EXIT_BROKEN_PIPE


def test_export_of_an_unknown_experiment_names_it(data_dir: Path) -> None:
    process = _export("--data-dir", str(data_dir), "--experiment", "nope")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert out == b""
    assert "'nope'" in err.decode() and "does not exist" in err.decode()


def test_export_output_that_cannot_be_a_file_is_named_and_leaves_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    """A directory, a missing parent directory, or an unknown experiment: exit 2 with the
    reason, and no file (nor a half-written .tmp) left anywhere."""
    cases = {
        str(tmp_path): "is a directory",
        str(tmp_path / "missing" / "w.dsjson"): "cannot be written: No such file or directory",
    }
    for output, reason in cases.items():
        process = _export("--data-dir", str(data_dir), "--experiment", "w", "--output", output)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 2, err
        assert f"--output: {output!r} {reason}" in err.decode()
    target = tmp_path / "nope.dsjson"
    process = _export("--data-dir", str(data_dir), "--experiment", "nope", "--output", str(target))
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "does not exist" in err.decode()
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / (tmp_path.name + ".tmp")).exists()


def test_export_through_a_symlink_replaces_the_file_it_points_to(
    data_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "real.dsjson"
    target.write_text("old\n")
    link = tmp_path / "link.dsjson"
    link.symlink_to(target)
    process = _export("--data-dir", str(data_dir), "--experiment", "w", "--output", str(link))
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert link.is_symlink()
    assert target.read_text().splitlines() == list(iter_dsjson(data_dir, "w"))


def test_export_into_a_pipe_named_as_output_writes_straight_to_it(data_dir: Path) -> None:
    """`--output /dev/stdout` (or a process substitution) is not replaced: it is written."""
    process = _export("--data-dir", str(data_dir), "--experiment", "w", "--output", "/dev/stdout")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out.decode().splitlines() == list(iter_dsjson(data_dir, "w"))


def test_export_keeps_the_replaced_files_mode_and_the_users_own_tmp_file(
    data_dir: Path, tmp_path: Path
) -> None:
    """Exports hold users' contexts: a file kept private stays private. A file the user
    happens to keep as `<name>.tmp` is not the export's scratch file."""
    target = tmp_path / "w.dsjson"
    target.write_text("old\n")
    target.chmod(0o640)
    mine = tmp_path / "w.dsjson.tmp"
    mine.write_text("the user's own\n")
    process = _export("--data-dir", str(data_dir), "--experiment", "w", "--output", str(target))
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert target.stat().st_mode & 0o777 == 0o640
    assert target.read_text().splitlines() == list(iter_dsjson(data_dir, "w"))
    assert mine.read_text() == "the user's own\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["w.dsjson", "w.dsjson.tmp"]


def test_export_into_a_pipe_given_as_output_that_stops_early_ends_quietly(
    data_dir: Path,
) -> None:
    process = _export("--data-dir", str(data_dir), "--experiment", "w", "--output", "/dev/stdout")
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"{")
    process.stdout.close()
    err = process.stderr.read()
    process.wait(timeout=120)
    assert err == b"" and process.returncode == EXIT_BROKEN_PIPE
