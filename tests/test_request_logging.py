"""Every log line an RPC writes carries its method, request id and experiment."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from bandit_server.logging import add_request_fields
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from tests.server import ServerThread


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = ServerThread(tmp_path / "data").start()
    yield server
    server.stop()


def test_lines_carry_the_callers_request_id(server: ServerThread) -> None:
    with capture_logs(processors=[add_request_fields]) as lines:
        server.experiments.CreateExperiment(
            pb.CreateExperimentRequest(experiment=pb.Experiment(name="shop")),
            metadata=[("x-request-id", "req-42")],
        )
    created = [line for line in lines if line["event"] == "experiment_created"]
    assert len(created) == 1
    assert created[0]["method"] == "/bandit.v1.ExperimentService/CreateExperiment"
    assert created[0]["request_id"] == "req-42"
    assert created[0]["experiment"] == "shop"


def test_lines_get_a_made_up_request_id_and_nothing_leaks_outside_calls(tmp_path: Path) -> None:
    with capture_logs(processors=[add_request_fields]) as lines:
        server = ServerThread(tmp_path / "data").start()
        try:
            for name in ("first", "second"):
                server.experiments.CreateExperiment(
                    pb.CreateExperimentRequest(experiment=pb.Experiment(name=name))
                )
            with pytest.raises(grpc.RpcError):
                server.bandit.Rank(pb.RankRequest(experiment="first"))
        finally:
            server.stop()
    created = [line for line in lines if line["event"] == "experiment_created"]
    assert [line["experiment"] for line in created] == ["first", "second"]
    ids = {line["request_id"] for line in created}
    assert len(ids) == 2 and all(ids)
    # Lines the server writes outside any call (start, stop, checkpoints) carry no call fields.
    outside = [line for line in lines if line["event"] in ("engine_started", "engine_stopped")]
    assert len(outside) == 2
    assert all("method" not in line and "request_id" not in line for line in outside)
