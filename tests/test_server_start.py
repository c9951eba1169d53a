"""Starting `bandit-server serve` where it cannot serve: a data directory another server uses, a
port another server listens on, a data directory that is not one. Each ends at once with a
message naming what and why (exit 2), and the first server serves on untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2_grpc as pb_grpc
from bandit_server.rpc.server import free_port

VW_ARGS = "--cb_explore_adf --epsilon 0.1"


def _serve(data_dir: Path, port: int, *more: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bandit_server", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--log-level", "warning", *more],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _ready(port: int) -> grpc.Channel:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel


def _refused(data_dir: Path, port: int, *more: str) -> str:
    """Start a server that must refuse: its exit status is 2; returns what it printed."""
    process = _serve(data_dir, port, *more)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()  # it is serving: do not leave it behind the failed test
        process.wait()
        raise
    text = err.decode()
    assert process.returncode == 2, text
    assert "Traceback" not in text, text
    return text


def _serves_and_stops(data_dir: Path, port: int) -> None:
    """A server starts on `data_dir`, answers, and stops cleanly on SIGTERM."""
    process = _serve(data_dir, port)
    try:
        _ready(port).close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0


def _experiment_names(channel: grpc.Channel) -> list[str]:
    stub = pb_grpc.ExperimentServiceStub(channel)
    reply = stub.ListExperiments(pb.ListExperimentsRequest())
    return [experiment.name for experiment in reply.experiments]


def test_a_second_server_on_a_data_directory_or_a_port_in_use_refuses_to_start(
    tmp_path: Path,
) -> None:
    first_dir, port = tmp_path / "first", free_port()
    first = _serve(first_dir, port)
    try:
        channel = _ready(port)
        pb_grpc.ExperimentServiceStub(channel).CreateExperiment(
            pb.CreateExperimentRequest(experiment=pb.Experiment(name="only", vw_args=VW_ARGS))
        )

        same_dir = _refused(first_dir, free_port())
        assert f"--data-dir {str(first_dir)!r} is in use by another server" in same_dir
        assert f"(pid {first.pid})" in same_dir

        same_port = _refused(tmp_path / "second", port)
        assert f"cannot listen on 127.0.0.1:{port}" in same_port
        # Every new connection still reaches the first server: none was shared out.
        for _ in range(8):
            fresh = _ready(port)
            assert _experiment_names(fresh) == ["only"]
            fresh.close()
        channel.close()
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)

    # The refused server let its own directory go: a server starts there now.
    _serves_and_stops(tmp_path / "second", free_port())


def test_a_killed_server_leaves_its_data_directory_free(tmp_path: Path) -> None:
    """The lock is the kernel's: `kill -9` cannot leave the directory locked."""
    data_dir, port = tmp_path / "data", free_port()
    first = _serve(data_dir, port)
    _ready(port).close()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    _serves_and_stops(data_dir, port)


def test_a_data_directory_that_is_not_one_is_named(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert f"--data-dir {str(a_file)!r} cannot be used" in _refused(a_file, free_port())

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "decisions.sqlite3").write_bytes(b"this is no SQLite file at all" * 200)
    message = _refused(garbage, free_port())
    assert f"--data-dir {str(garbage)!r} cannot be used" in message
    assert "not a database" in message


def test_a_configured_experiment_that_cannot_be_made_names_its_table(tmp_path: Path) -> None:
    """An experiment the config file declares, whose vw_args VW refuses, stops the start
    naming `experiments[i]` as the file's other errors do; the directory is free after."""
    config = tmp_path / "bandit.toml"
    config.write_text(
        '[[experiments]]\nname = "fine"\n'
        '[[experiments]]\nname = "broken"\nvw_args = "--cb_explore_adf --no-such-option"\n'
    )
    data_dir = tmp_path / "data"
    message = _refused(data_dir, free_port(), "--config", str(config))
    assert "experiments[1].vw_args: " in message and "--no-such-option" in message
    _serves_and_stops(data_dir, free_port())
