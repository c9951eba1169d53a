"""A real server in this process, on loopback, with real stubs: what gRPC tests talk to."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc

from bandit_server.app import App
from bandit_server.core.types import action_from_mapping, namespaces_from_mapping
from bandit_server.rpc import converters
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2_grpc as pb_grpc
from bandit_server.settings import Settings

T = TypeVar("T")


class ServerThread:
    def __init__(self, data_dir: Path, **settings: Any) -> None:
        settings.setdefault("sync", "normal")
        self.settings = Settings(host="127.0.0.1", port=0, data_dir=data_dir, **settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.app: App | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def start(self) -> ServerThread:
        self._thread.start()
        self.app = App(self.settings)
        port = self.run(self.app.start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.bandit = pb_grpc.BanditServiceStub(self.channel)
        self.experiments = pb_grpc.ExperimentServiceStub(self.channel)
        return self

    def stop(self) -> None:
        self.channel.close()
        assert self.app is not None
        self.run(self.app.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def namespaces_pb(mapping: Mapping[str, Mapping[str, Any]]) -> list[pb.Namespace]:
    return converters.namespace_messages(namespaces_from_mapping(mapping))


def actions_pb(actions: Any) -> list[pb.Action]:
    return converters.action_messages(action_from_mapping(a) for a in actions)
