"""DSJSON lines into columns: the line-level reader behind `dataset.load_dsjson`.

Each line is parsed once. The `c` object's text is kept byte for byte when it can be located
exactly (so VW sees the very example that was logged), else re-encoded compactly (the same
features for VW). Every malformed line raises InvalidArgument naming the source, the line
number, the field and what is wrong.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bandit_server.errors import InvalidArgument, describe

# VW's name for the namespace of features given directly under `c` or an action (not in an object).
DEFAULT_NAMESPACE = " "

# Exports round probabilities: a logged distribution within PMF_SUM_TOLERANCE of 1 is accepted,
# and rescaled to sum to 1 if it is off by more than PMF_RESCALE_ABOVE (what estimators allow).
PMF_SUM_TOLERANCE = 1e-3
PMF_RESCALE_ABOVE = 1e-7

_decoder = json.JSONDecoder()
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def read_lines(path: Path) -> Iterator[str]:
    """The lines of a .json/.jsonl file, gzip-compressed or not (judged by its first bytes)."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    opener: Any = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8") as handle:
        try:
            yield from handle
        except UnicodeDecodeError as exc:  # a binary file given as the log
            # No line number: text is decoded a buffer ahead of the lines handed out.
            raise InvalidArgument("log", f"{str(path)!r} is not UTF-8 text: {exc.reason}") from exc


class LogColumns:
    """Per-event values in file order, plus what the reader noticed on the way."""

    def __init__(self) -> None:
        self.event_ids: list[str] = []
        self.timestamps: list[str] = []
        self.c_jsons: list[str] = []
        self.model_versions: list[str] = []
        self.line_numbers: list[int] = []
        self.n_actions: list[int] = []
        self.actions: list[int] = []
        self.propensities: list[float] = []
        self.rewards: list[float] = []
        self.pmfs: list[list[float]] = []
        self.skip: list[bool] = []
        self.shared: dict[str, None] = {}
        self.action_ns: dict[str, None] = {}
        self.layouts: set[Any] = set()
        self.action_layouts: set[Any] = set()
        self.pdrop = 0
        self.rescaled = 0
        self.seen_ids: set[str] = set()
        self.duplicate_ids = 0


def parse_lines(lines: Iterable[str], source: str) -> LogColumns:
    """Parse every non-blank line (line numbers count blank ones too)."""
    cols = LogColumns()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        _parse_line(line, number, source, cols)
    if not cols.c_jsons:
        raise InvalidArgument("log", f"{source}: no events")
    return cols


def log_warnings(cols: LogColumns) -> list[str]:
    """Plain-language notes on what the log holds that estimates treat specially."""
    warnings = []
    n_skip = sum(cols.skip)
    if n_skip:
        warnings.append(
            f"{n_skip} of {len(cols.skip)} events are marked _skipLearn (no reward): they are "
            "replayed as predictions only and left out of every estimate"
        )
    if cols.duplicate_ids:
        warnings.append(f"{cols.duplicate_ids} events repeat an earlier EventId")
    if cols.rescaled:
        warnings.append(
            f"{cols.rescaled} logged distributions (p) summed to 1 only within "
            f"{PMF_SUM_TOLERANCE:g} (rounded exports) and were rescaled to sum to 1"
        )
    if cols.pdrop:
        warnings.append(
            f"{cols.pdrop} events carry pdrop > 0 (events dropped at logging time); estimates "
            "do not reweight for the dropped events"
        )
    return warnings


def _split_c(line: str) -> tuple[dict[str, Any], Any, str]:
    """(top-level object, parsed c, c's text). c's text is the original bytes when c can be
    located exactly, else c re-encoded compactly (the same features for VW either way)."""
    # A `"c":` preceded by `{` or `,` is a key (a raw quote cannot sit inside a JSON string), but
    # maybe a nested one: cut it out, parse the rest, and trust the cut only if the rest's
    # top-level "c" is exactly the placeholder.
    start = line.find(',"c":{')
    if start < 0 and line.startswith('{"c":{'):
        start = 0
    if start >= 0:
        value_start = start + 5
        try:
            c, end = _decoder.raw_decode(line, value_start)
            top = json.loads(line[:value_start] + "null" + line[end:])
        except ValueError:
            pass
        else:
            if isinstance(top, dict) and "c" in top and top["c"] is None:
                top["c"] = c
                return top, c, line[value_start:end]
    top = json.loads(line)
    if not isinstance(top, dict):
        raise ValueError("the line is not a JSON object")
    c = top.get("c")
    return top, c, _dumps(c) if isinstance(c, dict) else ""


def _namespace_names(obj: dict[str, Any], into: dict[str, None], seen: set[Any]) -> None:
    # Logs repeat a handful of layouts: classify keys only for a layout not seen before.
    layout = (tuple(obj), tuple(map(type, obj.values())))
    if layout in seen:
        return
    seen.add(layout)
    for key, value in obj.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict | list):
            into.setdefault(key, None)
        else:
            into.setdefault(DEFAULT_NAMESPACE, None)


def _number(top: dict[str, Any], key: str, where: str) -> float:
    value = top[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(key, f"{where}: {describe(value)} is not a finite number")
    return float(value)


def _parse_line(line: str, number: int, source: str, cols: LogColumns) -> None:
    where = f"{source}:{number}"
    try:
        top, c, c_text = _split_c(line)
    except ValueError as exc:
        raise InvalidArgument("log", f"{where}: not a JSON object: {exc}") from None
    if not isinstance(c, dict):
        raise InvalidArgument("c", f"{where}: no 'c' object (the context and actions)")
    multi = c.get("_multi")
    if not isinstance(multi, list) or not multi:
        raise InvalidArgument(
            "c._multi", f"{where}: no actions ('_multi' must be a non-empty list)"
        )
    n = len(multi)
    _namespace_names(c, cols.shared, cols.layouts)
    for action in multi:
        if type(action) is not dict:
            raise InvalidArgument("c._multi", f"{where}: {describe(action)} is not an object")
        _namespace_names(action, cols.action_ns, cols.action_layouts)

    skip = top.get("_skipLearn") is True
    pmf = _logged_pmf(top, n, where)
    total = math.fsum(pmf)
    if abs(total - 1.0) > PMF_RESCALE_ABOVE:
        pmf = [x / total for x in pmf]
        cols.rescaled += 1
    first = int(top["a"][0]) - 1
    chosen = _chosen_index(top, n, where)
    if skip:
        # Never learned: no reward; the logged distribution still says what was served.
        chosen = first if chosen is None else chosen
        probability = pmf[chosen]
        reward = math.nan
    else:
        for key in ("_label_cost", "_label_probability"):
            if key not in top:
                raise InvalidArgument(key, f"{where}: missing (the line is not _skipLearn)")
        if chosen is None:
            raise InvalidArgument(
                "_labelIndex", f"{where}: missing (neither _labelIndex nor _label_Action given)"
            )
        reward = -_number(top, "_label_cost", where)
        probability = _number(top, "_label_probability", where)
        if not 0.0 < probability <= 1.0:
            raise InvalidArgument(
                "_label_probability", f"{where}: {probability!r} is not in (0, 1]"
            )
        if abs(pmf[chosen] - probability) > PMF_SUM_TOLERANCE:
            raise InvalidArgument(
                "_label_probability",
                f"{where}: {probability!r} differs from the logged p of the chosen action "
                f"({pmf[chosen]!r})",
            )
    if first != chosen:
        raise InvalidArgument(
            "a", f"{where}: a[0]={first + 1} is not the chosen action {chosen + 1}"
        )

    pdrop = top.get("pdrop")
    if isinstance(pdrop, int | float) and pdrop > 0:
        cols.pdrop += 1
    event_id = top.get("EventId")
    event_id = event_id if isinstance(event_id, str) else ""
    if event_id:
        if event_id in cols.seen_ids:
            cols.duplicate_ids += 1
        cols.seen_ids.add(event_id)
    timestamp = top.get("Timestamp")
    state = top.get("VWState")
    version = state.get("m") if isinstance(state, dict) else None

    cols.event_ids.append(event_id)
    cols.timestamps.append(timestamp if isinstance(timestamp, str) else "")
    cols.c_jsons.append(c_text)
    cols.model_versions.append(version if isinstance(version, str) else "")
    cols.line_numbers.append(number)
    cols.n_actions.append(n)
    cols.actions.append(chosen)
    cols.propensities.append(probability)
    cols.rewards.append(reward)
    cols.pmfs.append(pmf)
    cols.skip.append(skip)


def _chosen_index(top: dict[str, Any], n: int, where: str) -> int | None:
    index = top.get("_labelIndex")
    action = top.get("_label_Action")
    chosen: int | None = None
    for key, value, offset in (("_labelIndex", index, 0), ("_label_Action", action, 1)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(key, f"{where}: {describe(value)} is not an integer")
        position = value - offset
        if not 0 <= position < n:
            raise InvalidArgument(key, f"{where}: {value!r} is outside the {n} actions")
        if chosen is not None and chosen != position:
            raise InvalidArgument(key, f"{where}: {value!r} disagrees with _labelIndex {chosen!r}")
        chosen = position
    return chosen


def _logged_pmf(top: dict[str, Any], n: int, where: str) -> list[float]:
    """The logged distribution over `_multi` positions, from `a` (1-based) and `p`."""
    a, p = top.get("a"), top.get("p")
    if not isinstance(a, list) or not isinstance(p, list) or not a:
        raise InvalidArgument(
            "a", f"{where}: 'a' and 'p' (the logged distribution) are missing or empty"
        )
    if len(a) != len(p):
        raise InvalidArgument("p", f"{where}: {len(p)} probabilities for {len(a)} actions in 'a'")
    # Fast path for well-formed lines (checked wholesale); the loop below names what is wrong.
    if (
        set(map(type, a)) == {int}
        and set(map(type, p)) <= {float, int}
        and min(a) >= 1
        and max(a) <= n
        and len(set(a)) == len(a)
        and min(p) >= 0.0
        and max(p) <= 1.0
    ):
        pmf = [0.0] * n
        for action, prob in zip(a, p, strict=True):
            pmf[action - 1] = float(prob)
    else:
        pmf = _checked_pmf(a, p, n, where)
    total = sum(pmf)
    if abs(total - 1.0) > PMF_SUM_TOLERANCE:
        raise InvalidArgument("p", f"{where}: the probabilities sum to {total!r}, not 1")
    return pmf


def _checked_pmf(a: list[Any], p: list[Any], n: int, where: str) -> list[float]:
    pmf = [0.0] * n
    seen = set()
    for action, prob in zip(a, p, strict=True):
        if isinstance(action, bool) or not isinstance(action, int) or not 1 <= action <= n:
            raise InvalidArgument("a", f"{where}: {describe(action)} is not an action in 1..{n}")
        if action in seen:
            raise InvalidArgument("a", f"{where}: action {action} is listed twice")
        seen.add(action)
        if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 <= prob <= 1.0:
            raise InvalidArgument("p", f"{where}: {describe(prob)} is not a probability")
        pmf[action - 1] = float(prob)
    return pmf
