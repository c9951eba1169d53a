"""The gRPC server: bandit and experiment services, health, reflection, on one port."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from bandit_server.engine.engine import Engine
from bandit_server.errors import CannotStart
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2_grpc as pb_grpc
from bandit_server.rpc.interceptors import LoggingContextInterceptor
from bandit_server.rpc.servicers import BanditServicer, ExperimentServicer

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["BanditService"].full_name,
    pb.DESCRIPTOR.services_by_name["ExperimentService"].full_name,
)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, for starting a server in another process (tests, scripts)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def build_server(
    engine: Engine,
    host: str,
    port: int,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    *,
    max_actions: int,
) -> tuple[grpc.aio.Server, int, health_aio.HealthServicer]:
    """A started server and the port it bound (port 0 picks a free one).

    `extra_handlers` lets benchmarks add a baseline service on the very same server setup.
    """
    # Without SO_REUSEPORT (gRPC's default on Linux), a second server on a port already in use
    # fails to start instead of quietly taking a share of the first one's connections.
    server = grpc.aio.server(
        interceptors=[LoggingContextInterceptor()], options=[("grpc.so_reuseport", 0)]
    )
    if extra_handlers:
        server.add_generic_rpc_handlers(tuple(extra_handlers))
    pb_grpc.add_BanditServiceServicer_to_server(BanditServicer(engine, max_actions), server)
    pb_grpc.add_ExperimentServiceServicer_to_server(ExperimentServicer(engine), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )  # fmt: skip
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio raises "Failed to bind" where older ones returned 0
        bound = 0
    if bound == 0:
        raise CannotStart(
            f"cannot listen on {host}:{port}: the port is in use or the address is not this "
            "machine's (--host, --port)"
        )
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health
