"""Thin adapters: convert the request, call the engine, convert the answer back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import structlog

from bandit_server.engine.engine import Engine
from bandit_server.errors import InvalidArgument
from bandit_server.rpc import converters
from bandit_server.rpc.errors import status_for
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def _call(context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[T]]) -> T:
    try:
        return await work()
    except Exception as exc:
        code = status_for(exc)
        if code is None:
            log.exception("internal_error")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        else:
            await context.abort(code, str(exc))
        raise AssertionError("unreachable: abort raises") from exc


class BanditServicer(pb_grpc.BanditServiceServicer):  # type: ignore[misc]
    def __init__(self, engine: Engine, max_actions: int) -> None:
        self._engine = engine
        self._max_actions = max_actions

    async def Rank(
        self, request: pb.RankRequest, context: grpc.aio.ServicerContext
    ) -> pb.RankResponse:
        async def work() -> pb.RankResponse:
            if len(request.actions) > self._max_actions:  # before any work on them
                raise InvalidArgument(
                    "actions",
                    f"{len(request.actions)} actions, more than this server's max_actions "
                    f"({self._max_actions})",
                )
            result = await self._engine.rank(converters.rank_input(request))
            return converters.rank_response(result)

        return await _call(context, work)

    async def Reward(
        self, request: pb.RewardRequest, context: grpc.aio.ServicerContext
    ) -> pb.RewardResponse:
        async def work() -> pb.RewardResponse:
            late = await self._engine.reward(request.experiment, request.event_id, request.value)
            return pb.RewardResponse(late=late)

        return await _call(context, work)

    async def Activate(
        self, request: pb.ActivateRequest, context: grpc.aio.ServicerContext
    ) -> pb.ActivateResponse:
        async def work() -> pb.ActivateResponse:
            late = await self._engine.activate(request.experiment, request.event_id)
            return pb.ActivateResponse(late=late)

        return await _call(context, work)


class ExperimentServicer(pb_grpc.ExperimentServiceServicer):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def CreateExperiment(
        self, request: pb.CreateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Experiment:
        async def work() -> pb.Experiment:
            config = converters.experiment_config(request.experiment)
            return converters.experiment_message(await self._engine.create_experiment(config))

        return await _call(context, work)

    async def GetExperiment(
        self, request: pb.GetExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Experiment:
        async def work() -> pb.Experiment:
            return converters.experiment_message(self._engine.get_experiment(request.name))

        return await _call(context, work)

    async def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExperimentsResponse:
        async def work() -> pb.ListExperimentsResponse:
            experiments = self._engine.list_experiments()
            return pb.ListExperimentsResponse(
                experiments=[converters.experiment_message(s) for s in experiments]
            )

        return await _call(context, work)

    async def UpdateExperiment(
        self, request: pb.UpdateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Experiment:
        async def work() -> pb.Experiment:
            config = converters.experiment_config(request.experiment)
            return converters.experiment_message(await self._engine.update_experiment(config))

        return await _call(context, work)

    async def DeleteExperiment(
        self, request: pb.DeleteExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteExperimentResponse:
        async def work() -> pb.DeleteExperimentResponse:
            await self._engine.delete_experiment(request.name)
            return pb.DeleteExperimentResponse()

        return await _call(context, work)

    async def RebuildModel(
        self, request: pb.RebuildModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.Experiment:
        async def work() -> pb.Experiment:
            status = await self._engine.rebuild_model(request.name, list(request.skip_event_ids))
            return converters.experiment_message(status)

        return await _call(context, work)
