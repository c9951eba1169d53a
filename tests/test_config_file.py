"""Experiments declared in the config file exist when the server starts, and follow edits."""

from __future__ import annotations

from pathlib import Path

from bandit_server import settings
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from tests.server import ServerThread

CONFIG = """
[server]
sync = "normal"

[[experiments]]
name = "homepage"
vw_args = "--cb_explore_adf --squarecb -q UA"
reward_wait_seconds = 30
reward_aggregation = "sum"
default_reward = -0.5
"""


def _start(tmp_path: Path, text: str) -> ServerThread:
    path = tmp_path / "bandit.toml"
    path.write_text(text)
    declared = settings.load(path, environ={}).experiments
    return ServerThread(tmp_path / "data", experiments=declared).start()


def test_declared_experiments_are_created_then_updated_on_restart(tmp_path: Path) -> None:
    """A [[experiments]] entry is created on first start and updated when the file changes."""
    server = _start(tmp_path, CONFIG)
    try:
        got = server.experiments.GetExperiment(pb.GetExperimentRequest(name="homepage"))
        assert got.vw_args == "--cb_explore_adf --squarecb -q UA"
        assert got.reward_wait_seconds == 30
        assert got.reward_aggregation == pb.REWARD_AGGREGATION_SUM
        assert got.default_reward == -0.5
    finally:
        server.stop()
    server = _start(tmp_path, CONFIG.replace("reward_wait_seconds = 30", "reward_wait_seconds = 5"))
    try:
        got = server.experiments.GetExperiment(pb.GetExperimentRequest(name="homepage"))
        assert got.reward_wait_seconds == 5
    finally:
        server.stop()
