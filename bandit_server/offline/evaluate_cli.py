"""Command-line front of the offline tools: `evaluate`, `search` and `importance` subcommands.

`add_offline_commands(subparsers)` adds them to the `bandit-server` parser; each handler returns
an exit code (0 done, 2 bad input: the message goes to stderr). VW command lines start with
dashes, so pass them with a space inside (`--policy "--cb_explore_adf --epsilon 0.1"`) or with
an equals sign (`--policy=--cb_explore_adf`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bandit_server.errors import BanditError, InvalidArgument
from bandit_server.offline.dataset import LoggedDataset, load_dsjson
from bandit_server.offline.estimators import INTERVALS
from bandit_server.offline.evaluation import (
    ESTIMATOR_NAMES,
    ORDERS,
    Evaluation,
    EvaluationSettings,
    evaluate,
)
from bandit_server.offline.importance import ImportanceResult, importance
from bandit_server.offline.replay import (
    BASELINE_CANDIDATES,
    DEFAULT_REWARD_MODEL_ARGS,
    Candidate,
    VWLearner,
    parse_candidate,
)
from bandit_server.offline.report import (
    render_html,
    report_json,
    short_name,
    write_html,
    write_json,
)
from bandit_server.offline.search import (
    DEFAULT_CB_TYPES,
    DEFAULT_EXPLORATIONS,
    DEFAULT_INTERACTIONS,
    DEFAULT_LEARNING_RATES,
    SearchGrid,
    SearchResult,
    search,
)

Subparsers = argparse._SubParsersAction  # the type argparse gives `add_subparsers()`


def add_offline_commands(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    """Add `evaluate`, `search` and `importance` to a `bandit-server` command parser."""
    ev = subparsers.add_parser(
        "evaluate", help="counterfactual evaluation of policies on a DSJSON log"
    )
    _common(ev)
    ev.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="POLICY",
        help="a VW command line with --cb_explore_adf, or logged, baseline, uniform, "
        "constant:<index> (0-based; the first action on events with fewer) (repeatable)",
    )
    ev.add_argument(
        "--baselines", action="store_true", help="also evaluate the first action and uniform"
    )
    ev.set_defaults(handler=_guarded(_evaluate))

    se = subparsers.add_parser("search", help="evaluate a grid of VW settings and recommend one")
    _common(se)
    se.add_argument(
        "--exploration",
        action="append",
        metavar="OPTIONS",
        help=f"exploration options (repeatable; default {list(DEFAULT_EXPLORATIONS)})",
    )
    se.add_argument(
        "--interactions",
        action="append",
        metavar="OPTIONS",
        help="none, pairs, all, or -q options (repeatable; default none, pairs, all)",
    )
    se.add_argument(
        "--learning-rate",
        action="append",
        type=float,
        metavar="RATE",
        help="VW -l values (repeatable; default 0.5)",
    )
    se.add_argument(
        "--cb-type",
        action="append",
        choices=("ips", "dr", "mtr"),
        help="cb_type values (repeatable; default mtr)",
    )
    se.set_defaults(handler=_guarded(_search))

    im = subparsers.add_parser("importance", help="namespace importance by ablation")
    _common(im)
    im.add_argument("--policy", required=True, metavar="VW_ARGS", help="the VW policy to explain")
    im.add_argument(
        "--namespace",
        action="append",
        metavar="SCOPE:NAME",
        help="shared:<name> or action:<name> (repeatable; default: all in the log)",
    )
    im.set_defaults(handler=_guarded(_importance))


def _common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--log", type=Path, help="a DSJSON file (.json/.jsonl, gzip or not)")
    source.add_argument("--data-dir", type=Path, help="a service data directory")
    parser.add_argument("--experiment", help="the experiment to read (with --data-dir)")
    parser.add_argument(
        "--estimator",
        action="append",
        choices=ESTIMATOR_NAMES,
        help="repeatable; the first is primary (default DR, IPS, SNIPS)",
    )
    parser.add_argument("--interval", choices=INTERVALS, default="wald")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument(
        "--reward-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="default: [min(0, min reward), max(1, max reward)] of the log",
    )
    parser.add_argument(
        "--reward-model",
        default=DEFAULT_REWARD_MODEL_ARGS,
        metavar="VW_ARGS",
        help="VW --cb_adf regressor for DM/DR (progressive)",
    )
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="file",
        help="replay in file order (VW's) or by Timestamp",
    )
    parser.add_argument("--report", type=Path, help="write an HTML report here")
    parser.add_argument("--json", type=Path, help="write the JSON result here")
    parser.add_argument("--title", help="report title")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--workers", type=int, default=1, help="replay VW policies in this many processes"
    )


def _check_outputs(args: argparse.Namespace) -> None:
    """--report and --json must be writable files: found out before a long evaluation, not
    after it."""
    for option in ("report", "json"):
        path: Path | None = getattr(args, option, None)
        if path is None:
            continue
        if path.is_dir():
            raise InvalidArgument(f"--{option}", f"{str(path)!r} is a directory")
        if not path.parent.is_dir():
            raise InvalidArgument(
                f"--{option}", f"{str(path)!r}: directory {str(path.parent)!r} does not exist"
            )


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            _check_outputs(args)
            return handler(args)
        except (BanditError, OSError) as exc:
            print(f"bandit-server {getattr(args, 'command', 'offline')}: {exc}", file=sys.stderr)
            return 2

    return run


def _dataset(args: argparse.Namespace) -> LoggedDataset:
    if args.log is not None:
        if args.experiment:
            raise InvalidArgument("--experiment", "goes with --data-dir, not --log")
        return load_dsjson(args.log, progress=not args.no_progress)
    if not args.experiment:
        raise InvalidArgument("--experiment", "is required with --data-dir")
    from bandit_server.export import iter_dsjson  # the service's own log, only when asked for

    name = f"{args.data_dir}:{args.experiment}"
    lines = iter_dsjson(args.data_dir, args.experiment)
    return load_dsjson(lines, name=name, progress=not args.no_progress)


def _settings(args: argparse.Namespace) -> EvaluationSettings:
    kwargs: dict[str, Any] = {
        "interval": args.interval,
        "alpha": args.alpha,
        "n_bootstrap": args.n_bootstrap,
        "seed": args.seed,
        "reward_range": tuple(args.reward_range) if args.reward_range else None,
        "reward_model_args": args.reward_model,
        "order": args.order,
    }
    if args.estimator:
        kwargs["estimators"] = tuple(args.estimator)
    return EvaluationSettings(**kwargs)


def _evaluate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    candidates: list[Candidate] = [
        parse_candidate(text, f"--policy[{i}]") for i, text in enumerate(args.policy)
    ]
    if args.baselines:
        candidates += [c for c in BASELINE_CANDIDATES if c not in candidates]
    if not candidates:
        raise InvalidArgument("--policy", "give at least one policy (or --baselines)")
    data = _dataset(args)
    result = evaluate(
        data, candidates, settings, progress=not args.no_progress, workers=args.workers
    )
    print(_table(result))
    _outputs(args, "Offline evaluation", evaluation=result)
    return 0


def _search(args: argparse.Namespace) -> int:
    settings = _settings(args)
    grid = SearchGrid(
        explorations=tuple(args.exploration or DEFAULT_EXPLORATIONS),
        interactions=tuple(args.interactions or DEFAULT_INTERACTIONS),
        learning_rates=tuple(args.learning_rate or DEFAULT_LEARNING_RATES),
        cb_types=tuple(args.cb_type or DEFAULT_CB_TYPES),
    )
    data = _dataset(args)
    result = search(data, grid, settings, progress=not args.no_progress, workers=args.workers)
    print(_table(result.evaluation, result))
    rec = result.recommendation
    if rec.args is None:
        print("\nKeep the current policy: no candidate is better at the corrected level.")
    else:
        print(
            f"\nRecommended: {rec.args}\n  estimate {rec.estimate:.4f}, "
            f"{rec.difference:+.4f} vs logged (corrected lower bound {rec.difference_lower:+.4f})"
        )
    _outputs(args, "Policy search", search=result)
    return 0


def _importance(args: argparse.Namespace) -> int:
    settings = _settings(args)
    policy = parse_candidate(args.policy, "--policy")
    if not isinstance(policy, VWLearner):
        raise InvalidArgument("--policy", f"{args.policy!r} is not a VW command line")
    namespaces = None
    if args.namespace:
        namespaces = []
        for i, text in enumerate(args.namespace):
            scope, sep, name = text.partition(":")
            if not sep or scope not in ("shared", "action") or not name:
                raise InvalidArgument(
                    f"--namespace[{i}]", f"{text!r} is not shared:<name> or action:<name>"
                )
            namespaces.append((scope, name))
    data = _dataset(args)
    result = importance(
        data, policy, settings, namespaces=namespaces, progress=not args.no_progress
    )
    print(_importance_table(result))
    _outputs(args, "Feature importance", importance=result)
    return 0


def _outputs(
    args: argparse.Namespace,
    title: str,
    *,
    evaluation: Evaluation | None = None,
    search: SearchResult | None = None,
    importance: ImportanceResult | None = None,
) -> None:
    if args.report is not None:
        page = render_html(
            evaluation, search=search, importance=importance, title=args.title or title
        )
        write_html(args.report, page)
        print(f"report: {args.report}", file=sys.stderr)
    if args.json is not None:
        write_json(args.json, report_json(evaluation, search=search, importance=importance))
        print(f"json: {args.json}", file=sys.stderr)


def _table(result: Evaluation, search: SearchResult | None = None) -> str:
    lines = [
        f"{result.n_estimated} events with a reward ({result.n_skipped} skipped, never learned); "
        f"{result.settings.primary}, {result.settings.interval} intervals at "
        f"{1 - result.settings.alpha:.0%}",
        f"{'estimate':>9} {'interval':>19} {'vs logged':>10} {'interval':>19} {'ESS':>8}  policy",
    ]
    for row in sorted(result.table(), key=lambda r: -r.value):
        lines.append(
            f"{row.value:9.4f} [{row.lower:8.4f},{row.upper:8.4f}] {row.difference:+10.4f} "
            f"[{row.difference_lower:+8.4f},{row.difference_upper:+8.4f}] {row.ess:8.0f}  "
            f"{short_name(row.policy)}"
        )
    lines += [f"warning: {text}" for text in result.warnings]
    if search is not None:
        lines += [f"note: {text}" for text in search.notes]
    return "\n".join(lines)


def _importance_table(result: ImportanceResult) -> str:
    lines = [
        f"{result.estimator} of {result.policy} with every namespace: {result.full_value:.4f}",
        f"{'importance':>10} {'interval':>19} {'without':>8}  namespace",
    ]
    for row in result.rows:
        lines.append(
            f"{row.importance:+10.4f} [{row.importance_lower:+8.4f},{row.importance_upper:+8.4f}]"
            f" {row.value:8.4f}  {row.scope}:{row.namespace!r} (VW index {row.letter!r})"
        )
    lines += [f"note: {text}" for text in result.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The offline commands on their own: `python -m bandit_server.offline.evaluate_cli ...`."""
    parser = argparse.ArgumentParser(prog="bandit-server")
    add_offline_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
