"""Adds method, request id and experiment to every log line an RPC writes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import grpc

from bandit_server.logging import request_fields

REQUEST_ID_HEADER = "x-request-id"
# Made-up request ids: process id plus a counter, unique per server run and cheaper than uuid4.
_PREFIX = f"{os.getpid():x}-"
_counter = itertools.count(1)


def _fields(
    method: str, request: Any, context: grpc.aio.ServicerContext, number: int
) -> dict[str, object]:
    request_id = ""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            request_id = str(value)
            break
    experiment = getattr(request, "experiment", "") or getattr(request, "name", "")
    if not isinstance(experiment, str):  # CreateExperiment carries a message
        experiment = experiment.name
    return {
        "method": method,
        "request_id": request_id or f"{_PREFIX}{number:x}",
        "experiment": experiment,
    }


def _wrap(behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], method: str) -> Any:
    async def bound(request: Any, context: grpc.aio.ServicerContext) -> Any:
        # Fields are computed only if the call logs something (see bandit_server.logging).
        token = request_fields.set(partial(_fields, method, request, context, next(_counter)))
        try:
            return await behavior(request, context)
        finally:
            request_fields.reset(token)

    return bound


class LoggingContextInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        # Wrapped handlers are built once per method, not per call.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming (health watch, reflection): left as is
        wrapped = grpc.unary_unary_rpc_method_handler(
            _wrap(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._handlers[method] = wrapped
        return wrapped
