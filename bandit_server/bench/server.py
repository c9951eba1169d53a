"""The benchmark's server: the real service plus an empty and a floor Rank on the same server.

The empty handler deserialises a RankRequest and returns an empty RankResponse, so the ratio
Rank / empty isolates what our Rank adds on top of gRPC itself; bench.floor is the least any
Rank must add.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc

from bandit_server import logging as log_config
from bandit_server.app import App
from bandit_server.bench.floor import FloorRank
from bandit_server.bench.threads import write_names_forever
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.settings import Settings


async def _empty(request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
    return pb.RankResponse()


def empty_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "bench.v1.Empty",
        {
            "Rank": grpc.unary_unary_rpc_method_handler(
                _empty,
                request_deserializer=pb.RankRequest.FromString,
                response_serializer=pb.RankResponse.SerializeToString,
            )
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--sync", default="full")
    args = parser.parse_args()
    log_config.configure("warning")
    settings = Settings(port=args.port, data_dir=args.data_dir, sync=args.sync)
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    names = asyncio.create_task(write_names_forever(settings.data_dir))
    try:
        await App(settings, [empty_handler(), FloorRank().handler()]).serve_until_signal()
    finally:
        names.cancel()


if __name__ == "__main__":
    main()
