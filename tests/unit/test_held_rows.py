"""HeldRows: the rows a rebuild holds, as a range of the experiment's learned rows."""

from __future__ import annotations

from bandit_server.engine.rebuild import HeldRows
from bandit_server.storage.records import LearnedRow


def _rows(*seqs: int) -> list[LearnedRow]:
    return [LearnedRow("e", f"id{seq}", 0.0, 0.0, seq) for seq in seqs]


def test_rows_make_the_range_from_before_the_first_to_the_last() -> None:
    assert HeldRows.of(_rows(5, 9, 12)) == HeldRows(4, 12)
    assert not HeldRows.of([])


def test_extending_appends_and_an_empty_range_takes_the_start_of_what_comes() -> None:
    held = HeldRows.of(_rows(5, 9))
    held.extend(HeldRows.of(_rows(14, 20)))  # other experiments' rows may lie between
    assert held == HeldRows(4, 20)
    drained = HeldRows(20, 20)
    drained.extend(HeldRows.of(_rows(23)))
    assert drained == HeldRows(22, 23)


def test_extending_with_nothing_changes_nothing() -> None:
    drained = HeldRows(20, 20)
    drained.extend(HeldRows.of([]))
    assert drained == HeldRows(20, 20)
    assert not drained
