"""Vowpal Wabbit behind the `Policy` protocol. The only module that imports vowpal_wabbit_next."""

from __future__ import annotations

import functools
import gc
import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import vowpal_wabbit_next as vw
from vowpal_wabbit_next import _core as vw_core

from bandit_server.core.policy import Pmf
from bandit_server.core.types import MAX_NUMBER
from bandit_server.errors import InvalidArgument, describe
from bandit_server.learners.vw_probe import probe

DEFAULT_VW_ARGS = "--cb_explore_adf --epsilon 0.2 -q ::"

# Options that make VW read or write files, or run its own loop: the service owns all of that.
_DRIVER_OPTIONS = frozenset(
    {
        "-d", "--data", "-f", "--final_regressor", "-i", "--initial_regressor",
        "-p", "--predictions", "-r", "--raw_predictions", "-c", "--cache", "--cache_file",
        "-k", "--kill_cache", "--readable_model", "--invert_hash", "--daemon", "--port",
        "--save_per_pass", "--passes", "--audit", "-a", "--audit_regressor", "--json",
        "--dsjson", "--pid_file", "--port_file", "--num_children", "--output_model_config",
        "--id", "--no_stdin", "--compressed", "--examples", "--holdout_off",
        "--holdout_period", "--holdout_after", "--early_terminate",
        "--dump_json_weights_experimental",
        # Not files, but the driver all the same: they print and exit, or talk to the network.
        "-h", "--help", "--version", "--active", "--span_server", "--span_server_port",
        "--unique_id", "--total", "--node",
    }
)  # fmt: skip


# Reductions whose random state VW does not save with the model: a model restored from bytes and
# fed more examples drifts from one that never stopped. Found by tests/unit/test_vw_policy.py.
_NOT_RESUMABLE = frozenset({"--bag", "--cover", "--rnd", "--cb_dro"})

# A model with --nn's --dropout predicts differently right after a save and reload: snapshots,
# checkpoints and the exported log could never reproduce what was served.
_IRREPRODUCIBLE = frozenset({"--dropout"})


def resumable(args: str) -> bool:
    """Whether a checkpoint of a model made with `args` continues exactly like the original."""
    return not any(token.split("=", 1)[0] in _NOT_RESUMABLE for token in shlex.split(args))


# Explorers whose cost grows far faster than the number of actions, with the most candidates a
# Rank may have under them. --graph_feedback solves an optimisation over the actions on every
# prediction, holding the GIL (the whole server waits): measured 2 ms at 5 actions, 7 ms at 10,
# 10-30 ms at 12 (40 ms to learn), 0.45 s at 40 and ~12 s at 100, where max_actions allows 1,000.
_ACTION_LIMITS = {"--graph_feedback": 10}


@functools.lru_cache(maxsize=256)  # Rank asks on every call
def action_limit(args: str) -> tuple[str, int] | None:
    """The option of `args` that limits a Rank's candidate actions, and its limit; None when
    only the server's max_actions does."""
    for token in shlex.split(args):
        option = token.split("=", 1)[0]
        if option in _ACTION_LIMITS:
            return option, _ACTION_LIMITS[option]
    return None


@functools.lru_cache(maxsize=256)  # Rank asks on every call; shlex.split costs ~40 us here
def interaction_order(args: str) -> int:
    """The most feature values VW multiplies together into one feature under `args`: 2 with
    -q/--quadratic (and --lrq, --automl), 3 with --cubic (or --automl's cubic interaction
    type), the namespaces named with --interactions."""
    tokens = shlex.split(args)
    order = 1
    for i, token in enumerate(tokens):
        option, _, attached = token.partition("=")
        value = attached or (tokens[i + 1] if i + 1 < len(tokens) else "")
        short_q = option.startswith("-q") and not option.startswith("--")  # -q UA, -qUA
        if short_q or option in ("--quadratic", "--lrq", "--lrqfa"):
            order = max(order, 2)
        elif option == "--cubic":
            order = max(order, 3)
        elif option == "--interactions":
            order = max(order, len(value))
        elif option == "--experimental_full_name_interactions":
            order = max(order, value.count("|") + 1)
        elif option == "--automl":  # adds interactions of its own, quadratic unless told
            order = max(order, 3 if "cubic" in tokens else 2)
    return order


@functools.lru_cache(maxsize=256)
def number_bound(args: str) -> float:
    """The largest feature value magnitude safe under `args`: products of interacted values
    stay within MAX_NUMBER (VW computes them in 32-bit floats; past their range --synthcover
    never returns and --squarecb predicts NaN, found by review)."""
    return float(10.0 ** (math.log10(MAX_NUMBER) / interaction_order(args)))  # 1e15 for -q


def split_args(args: str | Sequence[str]) -> list[str]:
    """A VW command line as a token list; `--quiet` is added so VW never writes to the console."""
    tokens = shlex.split(args) if isinstance(args, str) else list(args)
    if "--quiet" not in tokens:
        tokens.append("--quiet")
    return tokens


def validate_args(args: str, field: str = "vw_args", isolate: bool = False) -> str:
    """Check that `args` makes a VW contextual-bandit explorer; return it normalised.

    Raises InvalidArgument with VW's own message when VW rejects the command line. `isolate`
    first tries it in a child process (see vw_probe), for a caller that must outlive it.
    """
    try:
        tokens = shlex.split(args)
    except ValueError as exc:
        raise InvalidArgument(field, f"{describe(args)} is not a command line: {exc}") from None
    for token in tokens:
        option = token.split("=", 1)[0]
        if not option.startswith("--") and len(option) > 2 and option[:2] in _DRIVER_OPTIONS:
            option = option[:2]  # a short option with its value attached: "-d/path"
        if option in _IRREPRODUCIBLE:
            raise InvalidArgument(
                field,
                f"{describe(args)}: option {option!r} makes a saved and reloaded model predict "
                "differently, so no snapshot, checkpoint or export could reproduce it",
            )
        if option in _DRIVER_OPTIONS:
            raise InvalidArgument(
                field,
                f"{describe(args)}: option {option!r} controls files or VW's own driver; "
                "the service manages data and models itself",
            )
    if isolate:
        probe(shlex.join(tokens), field)
    try:
        workspace = vw.Workspace(split_args(tokens))
    except Exception as exc:  # VW raises plain RuntimeError with its own message
        raise InvalidArgument(field, f"{describe(args)} rejected by VW: {exc}") from None
    if not workspace.multiline or workspace.prediction_type != vw.PredictionType.ActionProbs:
        raise InvalidArgument(
            field,
            f"{describe(args)} does not make an exploring action-dependent-features learner "
            "(it must include --cb_explore_adf)",
        )
    return shlex.join(tokens)


class VWPolicy:
    """A VW workspace that reads DSJSON lines. Not thread-safe: one owner at a time."""

    def __init__(self, args: str, model: bytes | None = None) -> None:
        self._args = args
        self._workspace = vw.Workspace(split_args(args), model_data=model)
        # The public Workspace methods wrap every parsed example in a Python object and re-check
        # its label type per call; on Rank's hot path that costs more than VW's own prediction.
        # Examples parsed by this workspace's own DSJSON parser always match it, so we hand the
        # native examples straight to the native workspace.
        self._core = self._workspace._workspace
        self._parse = vw_core._parse_line_dsjson
        # --synthcover never returns from a prediction once a weight is NaN (found by an
        # adversarial run: --ftrl, one feature of 1e10 and a reward of 1e15).
        self._predict_hangs_on_nan = "--synthcover" in split_args(args)

    @classmethod
    def load(cls, args: str, model: bytes) -> VWPolicy:
        """A policy restored from `serialize()` bytes."""
        return cls(args, model)

    @property
    def args(self) -> str:
        return self._args

    def predict_one(self, dsjson_line: str) -> Pmf:
        return _pmf(self._core.predict_multi_ex_one(self._parse(self._core, dsjson_line)))

    def learn_one(self, dsjson_line: str) -> None:
        self._core.learn_multi_ex_one(self._parse(self._core, dsjson_line))

    def learn_then_predict_one(self, dsjson_line: str) -> Pmf | None:
        """Learn, then predict on the very same parsed examples: what the updated model says
        about the event it just learned, for a third of the cost of parsing it again (VW
        ignores the label when predicting; tests/unit/test_vw_policy.py pins both). None, with
        no prediction, when the model's weights are no longer finite and predicting would not
        return (--synthcover; the check reads every weight, ~0.5 ms at -b 18)."""
        examples = self._parse(self._core, dsjson_line)
        self._core.learn_multi_ex_one(examples)
        if self._predict_hangs_on_nan and not self.weights_finite():
            return None
        return _pmf(self._core.predict_multi_ex_one(examples))

    def weights_finite(self) -> bool:
        # A float64 sum is non-finite exactly when a weight is (float32 values cannot
        # overflow it), and is faster than an element-wise test.
        return bool(np.isfinite(np.asarray(self._workspace.weights()).sum(dtype=np.float64)))

    def predict_then_learn_one(self, dsjson_line: str) -> Pmf:
        """The prediction from before learning, then learn: one pass, as VW's driver does."""
        examples = self._parse(self._core, dsjson_line)
        return _pmf(self._core.predict_then_learn_multi_ex_one(examples))

    def serialize(self) -> bytes:
        return bytes(self._workspace.serialize())

    def replay(self, lines: Sequence[str], learn: Sequence[bool]) -> list[list[tuple[int, float]]]:
        """Per line in order: VW's prediction from before the line, then learn from it where
        `learn[i]` (predict only elsewhere), as VW's driver runs over a file. Predictions are
        VW's raw output: (index, probability) for --cb_explore_adf, (index, cost) for --cb_adf.
        """
        if len(lines) != len(learn):
            raise InvalidArgument("learn", f"{len(learn)} flags for {len(lines)} lines")
        parse, workspace = self._parse, self._core
        predict_then_learn = workspace.predict_then_learn_multi_ex_one
        predict = workspace.predict_multi_ex_one
        # The loop makes ~10 small objects an event, none able to form a cycle; the cyclic
        # collector would only rescan live objects (about 13% of the loop's time).
        collecting = gc.isenabled()
        gc.disable()
        try:
            predictions: list[Any] = [
                predict_then_learn(parse(workspace, line))
                if flag
                else predict(parse(workspace, line))
                for line, flag in zip(lines, learn, strict=True)
            ]
            return predictions
        finally:
            if collecting:
                gc.enable()


def validate_cost_model_args(args: str, field: str = "reward_model", isolate: bool = False) -> str:
    """Check that `args` makes a VW `--cb_adf` learner (per-action predicted costs, no
    exploration); return it normalised. Raises InvalidArgument naming `field` otherwise.
    `isolate`: first try it in a child process, as validate_args does."""
    try:
        tokens = shlex.split(args)
    except ValueError as exc:
        raise InvalidArgument(field, f"{describe(args)} rejected: {exc}") from None
    if isolate:
        probe(shlex.join(tokens), field)
    try:
        workspace = vw.Workspace(split_args(tokens))
    except Exception as exc:  # VW raises a plain RuntimeError with its message
        raise InvalidArgument(field, f"{describe(args)} rejected: {exc}") from None
    if not workspace.multiline or workspace.prediction_type != vw.PredictionType.ActionScores:
        raise InvalidArgument(
            field, f"{describe(args)} does not predict per-action costs (it needs --cb_adf)"
        )
    return shlex.join(tokens)


def _pmf(prediction: object) -> Pmf:
    # cb_explore_adf predicts action probabilities: a list of (index, probability) pairs.
    assert isinstance(prediction, list)
    return [(int(index), float(prob)) for index, prob in prediction]


def run_vw_command_line(args: Sequence[str], cwd: Path | None = None) -> tuple[str, list[str]]:
    """VW's own command-line driver in-process: (driver output, log lines). For reference runs."""
    return vw.run_cli_driver(list(args), onethread=True, cwd=cwd)


_SUMMARY_KEYS = {
    "number of examples": "examples",
    "weighted example sum": "weighted_examples",
    "weighted label sum": "weighted_labels",
    "average loss": "average_loss",
    "total feature number": "total_features",
}


def driver_summary(driver_output: str) -> dict[str, float]:
    """The closing figures of a driver run (`run_vw_command_line` without --quiet), e.g.
    {"examples": 1785.0, "average_loss": -0.317874, ...}. VW prints them with 6 decimals."""
    summary: dict[str, float] = {}
    for line in driver_output.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.strip() in _SUMMARY_KEYS:
            try:
                summary[_SUMMARY_KEYS[key.strip()]] = float(value)
            except ValueError:
                continue  # "average loss = n.a." when nothing was labelled
    return summary


def versions() -> dict[str, str]:
    """The VW library and its Python binding, for reports."""
    return {"vowpal_wabbit": str(vw.VW_VERSION), "vowpal_wabbit_next": str(vw.__version__)}
