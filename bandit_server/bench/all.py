"""`make bench`: Rank beside an empty handler on the same server, the learner beside raw VW, a
model rebuild beside another experiment's learning, and the offline tools.

Runs alternate (empty, floor, rank, empty, ...) so machine noise hits all alike; the best run of
each is reported. The floor handler (bench.floor) does only what any Rank must, so its ratio is
what is reachable here. The load generator is a separate process so it does not share our GIL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bandit_server.bench import learner as learner_bench
from bandit_server.bench import threads
from bandit_server.bench.load import WARMUP_REQUESTS
from bandit_server.bench.methods import BENCH_VW_ARGS
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2 as pb
from bandit_server.rpc.generated.bandit.v1 import bandit_pb2_grpc as pb_grpc
from bandit_server.rpc.server import free_port

VW_ARGS = BENCH_VW_ARGS
METHODS = ("empty", "floor", "rank")
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def _load(
    target: str, method: str, concurrency: int, server_pid: int, data_dir: Path
) -> dict[str, object]:
    cpu_before, threads_before = threads.process_cpu(server_pid), threads.thread_cpu(server_pid)
    out = subprocess.run(
        [sys.executable, "-m", "bandit_server.bench.load", "--target", target, "--method", method,
         "--concurrency", str(concurrency), "--seconds", str(SECONDS)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout)
    # Rank's events are learned when their 1 s windows close: wait for that, so the learning
    # is charged to this run and not to the next one.
    time.sleep(1.5)
    # Server CPU per request: steadier than req/s when other tenants take the machine's cores.
    cpu_after, threads_after = threads.process_cpu(server_pid), threads.thread_cpu(server_pid)
    cpu = cpu_after - cpu_before
    requests = float(result["requests"]) + WARMUP_REQUESTS  # type: ignore[arg-type]
    result["cpu_us_per_request"] = cpu / requests * 1e6
    spent = threads.by_role(threads_before, threads_after, threads.read_names(data_dir))
    # What the by-thread figures miss: threads that ended between the readings, rounding.
    spent["rest"] = cpu - sum(spent.values())
    result["cpu_us_by_thread"] = {name: s / requests * 1e6 for name, s in spent.items()}
    return result


def _serve_and_measure(sync: str, data_dir: Path) -> tuple[list[dict[str, object]], dict[str, int]]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bandit_server.bench.server", "--port", str(port),
         "--data-dir", str(data_dir), "--sync", sync],
    )  # fmt: skip
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=30)
    experiments = pb_grpc.ExperimentServiceStub(channel)
    # Every ranked event is learned (default reward at the 1 s window end), so learning runs at
    # the full Rank rate; Rank serves snapshots refreshed every second.
    experiments.CreateExperiment(
        pb.CreateExperimentRequest(
            experiment=pb.Experiment(
                name="bench", vw_args=VW_ARGS, reward_wait_seconds=1.0,
                model_update_interval_seconds=1.0,
            )
        )
    )  # fmt: skip
    rows: list[dict[str, object]] = []
    for concurrency in (1, 32):
        best: dict[str, dict[str, object]] = {}
        for _ in range(ROUNDS):
            for method in METHODS:
                result = _load(target, method, concurrency, server.pid, data_dir)
                if method not in best or _rps(result) > _rps(best[method]):
                    best[method] = result
        for method in METHODS:
            rows.append({"sync": sync, **best[method]})
    time.sleep(2.5)  # let the last windows close and the learner drain
    status = experiments.GetExperiment(pb.GetExperimentRequest(name="bench"))
    with __import__("sqlite3").connect(data_dir / "decisions.sqlite3") as db:
        decisions = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    channel.close()
    return rows, {"decisions": decisions, "learned": int(status.learned_events)}


def _rps(result: dict[str, object]) -> float:
    return float(result["rps"])  # type: ignore[arg-type]


def _print_threads(sync: str, rows: list[dict[str, object]]) -> None:
    """Where each handler's server CPU went, by thread (see bench.threads)."""
    columns = (*threads.ROLES, "rest")
    print(f"{sync:<7}{'in flight':>10}{'handler':>9}  CPU us a request by thread: "
          + ", ".join(columns))  # fmt: skip
    for row in rows:
        spent: dict[str, float] = row["cpu_us_by_thread"]  # type: ignore[assignment]
        print(f"{sync:<7}{row['concurrency']:>10}{row['method']:>9}  "
              + " / ".join(f"{spent[name]:.0f}" for name in columns))  # fmt: skip


def main() -> None:
    results: dict[str, object] = {}
    print(f"Rank vs an empty handler on the same server ({SECONDS:.0f} s runs, best of {ROUNDS})")
    print(
        f"{'sync':<7}{'in flight':>10}{'handler':>9}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'x/empty':>12}{'CPU us/req':>12}{'CPU empty/x':>16}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("full", "normal"):
            data_dir = Path(tmp) / sync
            rows, counts = _serve_and_measure(sync, data_dir)
            results[sync] = {"rows": rows, **counts}
            for i in range(0, len(rows), len(METHODS)):
                empty = rows[i]
                for row in rows[i : i + len(METHODS)]:
                    ratio = float(row["rps"]) / float(empty["rps"])  # type: ignore[arg-type]
                    cpu_ratio = float(empty["cpu_us_per_request"]) / float(  # type: ignore[arg-type]
                        row["cpu_us_per_request"]  # type: ignore[arg-type]
                    )
                    print(
                        f"{sync:<7}{row['concurrency']:>10}{row['method']:>9}{row['rps']:>10.0f}"
                        f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                        + (f"{ratio:>12.2f}" if row is not empty else f"{'':>12}")
                        + f"{row['cpu_us_per_request']:>12.0f}"
                        + (f"{cpu_ratio:>16.2f}" if row is not empty else "")
                    )
            print(f"{sync:<7} learner kept up: {counts['learned']} of {counts['decisions']} "
                  "decisions learned 2.5 s after the load stopped")  # fmt: skip
            _print_threads(sync, rows)
        learn = learner_bench.run(Path(tmp) / "normal", "bench", VW_ARGS)
        results["learner"] = learn
        print(
            f"learner: {learn['learner_per_s']:.0f} events/s (log read + learn) vs raw VW "
            f"learn_one {learn['raw_vw_per_s']:.0f} events/s on the same {learn['events']:.0f} "
            f"examples: ratio {learn['ratio']:.2f}"
        )
    print()
    print("A model rebuild beside another experiment's learning (in process)")
    from bandit_server.bench import rebuild as rebuild_bench

    results["rebuild"] = rebuild_bench.run()
    rebuild_bench.report(results["rebuild"])  # type: ignore[arg-type]
    print()
    print("Offline: estimators on 1,000,000 logged events")
    from bandit_server.bench import estimators as estimators_bench
    from bandit_server.bench import replay as replay_bench

    estimators_bench.main()
    print()
    print("Offline: counterfactual replay beside VW's own driver on 100,000 DSJSON events")
    replay_bench.main()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
