"""A grpc.aio load generator: N requests in flight for a fixed time; prints one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import grpc
import numpy as np

from bandit_server.bench.methods import PATHS
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb

WARMUP_REQUESTS = 50


def rank_requests(experiment: str, n: int) -> list[bytes]:
    """Serialised Rank requests shaped like the segments environment (3 segments x 5 variants)."""
    actions = [
        pb.Action(
            id=f"v{v}",
            features=[pb.Namespace(name="Action", features=[
                pb.Feature(name="variant", string_value=f"v{v}")])],
        )
        for v in range(5)
    ]  # fmt: skip
    prefix = uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        context = [pb.Namespace(name="User", features=[
            pb.Feature(name="segment", string_value=f"s{i % 3}"),
            pb.Feature(name="hour", number_value=float(i % 24))])]  # fmt: skip
        request = pb.RankRequest(
            experiment=experiment, event_id=f"{prefix}-{i}", context=context, actions=actions
        )
        out.append(request.SerializeToString())
    return out


async def run(
    target: str, method: str, concurrency: int, seconds: float, experiment: str
) -> dict[str, object]:
    requests = rank_requests(experiment, 60_000 if concurrency > 1 else 20_000)
    path = PATHS[method]
    latencies: list[float] = []
    next_index = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        for payload in requests[:WARMUP_REQUESTS]:  # warm up the connection and code paths
            await call(payload)
        requests = requests[WARMUP_REQUESTS:]
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal next_index
            while time.perf_counter() < stop_at and next_index < len(requests):
                payload = requests[next_index]
                next_index += 1
                start = time.perf_counter()
                await call(payload)
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {
        "method": method,
        "concurrency": concurrency,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--method", choices=sorted(PATHS), required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--experiment", default="bench")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.target, args.method, args.concurrency, args.seconds, args.experiment)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
