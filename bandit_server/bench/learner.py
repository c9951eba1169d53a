"""Learner throughput: the live learner path beside raw VW learn_one on the same examples."""

from __future__ import annotations

import time
from pathlib import Path

from bandit_server.core.dsjson import Label, learning_line
from bandit_server.engine.learner import Learner
from bandit_server.engine.model import ExperimentModel
from bandit_server.learners.vw import VWPolicy
from bandit_server.storage.models import DirectoryModelStore
from bandit_server.storage.records import LearnedRow
from bandit_server.storage.sqlite_log import SQLiteDecisionLog


def run(data_dir: Path, experiment: str, vw_args: str, limit: int = 20_000) -> dict[str, float]:
    """Learned events/s through the learner thread (log read + learn) and through raw VW."""
    decision_log = SQLiteDecisionLog(data_dir, "NORMAL")
    try:
        items = [
            item
            for _, item in zip(
                range(limit), decision_log.learn_items(experiment, vw_args), strict=False
            )
        ]
        lines = [
            learning_line(i.c_json, Label(i.chosen_index, i.probability, i.cost)) for i in items
        ]
        raw = VWPolicy(vw_args)
        start = time.perf_counter()
        for line in lines:
            raw.learn_one(line)
        raw_seconds = time.perf_counter() - start

        model = ExperimentModel(vw_args, "bench", 1.0)
        models = {experiment: model}
        store = DirectoryModelStore(data_dir / "bench-models")
        learner = Learner(decision_log, store, lambda: models, checkpoint_interval=3600.0)
        learner.start()
        start = time.perf_counter()
        for item in items:
            learner.enqueue(
                experiment, LearnedRow(experiment, item.event_id, item.cost, 0.0, item.seq)
            )
        while model.learned_seq < items[-1].seq:
            time.sleep(0.001)
        ours_seconds = time.perf_counter() - start
        learner.stop()
    finally:
        decision_log.close()
    return {
        "events": float(len(items)),
        "raw_vw_per_s": len(items) / raw_seconds,
        "learner_per_s": len(items) / ours_seconds,
        "ratio": raw_seconds / ours_seconds,
    }
