"""Policy search on a DSJSON log: which VW settings would have done better than the logged policy?

    .venv/bin/python simulations/policy_search_dsjson.py LOG.json
    .venv/bin/python simulations/policy_search_dsjson.py demo.json --make-demo --events 20000

`--make-demo` first writes LOG from a seeded synthetic environment (binary rewards, two context
namespaces), logged by an epsilon-greedy VW policy without interactions, so the search has
something to find. Then every grid policy is replayed over the log and estimated (DR with a
progressive reward model, IPS, SNIPS); the HTML and JSON reports land next to the log unless
--report/--json say otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

from bandit_server.errors import BanditError
from bandit_server.offline.dataset import load_dsjson
from bandit_server.offline.environments import SyntheticEnvironment
from bandit_server.offline.evaluation import EvaluationSettings
from bandit_server.offline.report import render_html, report_json, write_html, write_json
from bandit_server.offline.search import SearchGrid, search
from bandit_server.offline.simulate import simulate_log

DEMO_LOGGER = "--cb_explore_adf --epsilon 0.3"


def make_demo(path: Path, events: int, seed: int) -> None:
    """Write a seeded demo log (gzip when the name ends in .gz)."""
    env = SyntheticEnvironment(n_actions=5, reward="logistic", noise=0.0, logit_scale=2.5)
    tmp = path.with_name(path.name + ".tmp")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(tmp, "wt", encoding="utf-8") as out:
        for line in simulate_log(env, DEMO_LOGGER, events, seed):
            out.write(line + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="DSJSON file (.json/.jsonl, gzip or not)")
    parser.add_argument("--make-demo", action="store_true", help="write a demo log to LOG first")
    parser.add_argument("--events", type=int, default=20_000, help="demo log size")
    parser.add_argument("--seed", type=int, default=0, help="demo log seed")
    parser.add_argument("--report", type=Path, help="HTML report (default: LOG.search.html)")
    parser.add_argument("--json", type=Path, help="JSON result (default: LOG.search.json)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="parallel replay processes")
    args = parser.parse_args(argv)
    try:
        if args.make_demo:
            make_demo(args.log, args.events, args.seed)
            print(f"demo log: {args.events} events logged by `{DEMO_LOGGER}` -> {args.log}")
        data = load_dsjson(args.log, progress=not args.no_progress)
        result = search(
            data,
            SearchGrid(),
            EvaluationSettings(),
            progress=not args.no_progress,
            workers=args.workers,
        )
    except BanditError as exc:
        print(f"policy_search_dsjson: {exc}", file=sys.stderr)
        return 2
    report = args.report or args.log.with_name(args.log.name + ".search.html")
    document = args.json or args.log.with_name(args.log.name + ".search.json")
    write_html(report, render_html(search=result, title=f"Policy search: {args.log.name}"))
    write_json(document, report_json(search=result))
    ev = result.evaluation
    print(f"{ev.n_estimated} events with a reward, {ev.n_skipped} never learned")
    for row in sorted(ev.table(), key=lambda r: -r.value):
        print(
            f"{row.value:8.4f} [{row.lower:.4f}, {row.upper:.4f}]  {row.difference:+.4f} "
            f"[{row.difference_lower:+.4f}, {row.difference_upper:+.4f}]  {row.policy}"
        )
    rec = result.recommendation
    print("recommendation:", rec.args or "keep the current policy")
    print(f"report: {report}\njson: {document}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
