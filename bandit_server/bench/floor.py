"""A "floor" Rank for the benchmark: only what any Rank must do, to show what is reachable.

It asks VW for a prediction on a prepared line, waits for another thread to resolve a future
(as Rank waits for the log writer), and returns a prebuilt response: no conversion, validation,
log row, draw or learning. Its ratio to the empty handler is the most Rank could reach here.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading

import grpc

from bandit_server.bench.load import rank_requests
from bandit_server.bench.methods import BENCH_VW_ARGS
from bandit_server.core.dsjson import context_json, prediction_line
from bandit_server.learners.vw import VWPolicy
from bandit_server.rpc.converters import rank_input
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the call may have been cancelled meanwhile
        future.set_result(None)


class FloorRank:
    def __init__(self) -> None:
        request = rank_input(pb.RankRequest.FromString(rank_requests("floor", 1)[0]))
        self._line = prediction_line(context_json(request.context, request.actions))
        self._policy = VWPolicy(BENCH_VW_ARGS)
        ids = [action.id for action in request.actions]
        self._response = pb.RankResponse(
            event_id=request.event_id,
            chosen_action_id=ids[0],
            ranking=[pb.RankedAction(action_id=i, probability=1 / len(ids)) for i in ids],
            model_version="floor",
        )
        self._queue: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
        self._queue = queue.SimpleQueue()
        threading.Thread(target=self._resolver, name="floor-resolver", daemon=True).start()

    def _resolver(self) -> None:
        while True:
            loop, future = self._queue.get()
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

    async def rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> object:
        self._policy.predict_one(self._line)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((loop, done))
        await done
        return self._response

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "bench.v1.Floor",
            {
                "Rank": grpc.unary_unary_rpc_method_handler(
                    self.rank,
                    request_deserializer=pb.RankRequest.FromString,
                    response_serializer=pb.RankResponse.SerializeToString,
                )
            },
        )
