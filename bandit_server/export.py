"""DSJSON export of an experiment's decisions: learned lines in learning order, then the rest."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bandit_server.core.dsjson import DecisionRecord, Label, export_line
from bandit_server.core.experiment import check_experiment_name
from bandit_server.errors import InvalidArgument, NotFound
from bandit_server.storage.sqlite_log import LOG_FILE, SQLiteDecisionLog


def iso_timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iter_dsjson(data_dir: Path, experiment: str) -> Iterator[str]:
    """One DSJSON line per decision. Training a fresh VW with the experiment's vw_args on the
    learned lines (those without `_skipLearn`), in file order, rebuilds the served model."""
    check_experiment_name(experiment)
    if not (data_dir / LOG_FILE).exists():
        raise InvalidArgument("data_dir", f"{str(data_dir)!r} holds no decision log ({LOG_FILE})")
    try:
        decision_log = SQLiteDecisionLog.open_read_only(data_dir)
    except (sqlite3.DatabaseError, RuntimeError) as error:
        raise InvalidArgument(
            "data_dir", f"{str(data_dir / LOG_FILE)!r} cannot be read as a decision log: {error}"
        ) from error
    try:
        if experiment not in {row.name for row in decision_log.experiments()}:
            raise NotFound(f"experiment {experiment!r} does not exist in {str(data_dir)!r}")
        for row, cost, _seq, _activated in decision_log.export_rows(experiment):
            label = None if cost is None else Label(row.chosen_index, row.chosen_probability, cost)
            yield export_line(
                DecisionRecord(
                    event_id=row.event_id,
                    timestamp=iso_timestamp(row.timestamp),
                    c_json=row.c_json,
                    ranking_indices=row.ranking,
                    ranking_probabilities=row.probabilities,
                    model_version=row.model_version,
                    label=label,
                    deferred=row.deferred,
                )
            )
    finally:
        decision_log.close()
