"""The gRPC paths the load generator can call on the benchmark server."""

from __future__ import annotations

EMPTY_METHOD = "/bench.v1.Empty/Rank"
FLOOR_METHOD = "/bench.v1.Floor/Rank"
RANK_METHOD = "/bandit.v1.BanditService/Rank"
PATHS = {"empty": EMPTY_METHOD, "floor": FLOOR_METHOD, "rank": RANK_METHOD}
BENCH_VW_ARGS = "--cb_explore_adf --squarecb -q UA"
