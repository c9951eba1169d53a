"""Server settings: frozen, validated, from a TOML file, environment variables and flags."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bandit_server.core.experiment import (
    DEFAULT_REWARD_WAIT_SECONDS,
    Aggregation,
    ExperimentConfig,
)
from bandit_server.errors import InvalidArgument, describe
from bandit_server.learners.vw import DEFAULT_VW_ARGS

ENV_PREFIX = "BANDIT_"
DEFAULT_MAX_ACTIONS = 1000


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: Path = Path("./data")
    # "normal": a committed decision survives the process being killed (kill -9, OOM, crash);
    # "full" also fsyncs every group commit, so it survives power loss, at ~0.15-1 ms a commit.
    sync: str = "normal"
    checkpoint_interval_seconds: float = 30.0
    shutdown_grace_seconds: float = 10.0
    log_level: str = "info"
    # A Rank runs on the event loop, ~20-60 us an action: a cap keeps one huge call from
    # holding up every other (5,000 actions took ~0.4 s).
    max_actions: int = DEFAULT_MAX_ACTIONS
    experiments: tuple[ExperimentConfig, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidArgument("port", f"{self.port!r} is not a TCP port")
        if self.sync not in ("full", "normal"):
            raise InvalidArgument("sync", f"{describe(self.sync)} must be 'full' or 'normal'")
        if not self.checkpoint_interval_seconds > 0:
            raise InvalidArgument(
                "checkpoint_interval_seconds", f"{self.checkpoint_interval_seconds!r} must be > 0"
            )
        if not self.shutdown_grace_seconds >= 0:  # also rejects NaN
            raise InvalidArgument(
                "shutdown_grace_seconds", f"{self.shutdown_grace_seconds!r} must be >= 0"
            )
        if self.max_actions < 1:
            raise InvalidArgument("max_actions", f"{self.max_actions!r} must be >= 1")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise InvalidArgument("log_level", f"{describe(self.log_level)} is not a level")


_SCALARS: dict[str, type] = {
    "host": str,
    "port": int,
    "data_dir": Path,
    "sync": str,
    "checkpoint_interval_seconds": float,
    "shutdown_grace_seconds": float,
    "log_level": str,
    "max_actions": int,
}


def _coerce(key: str, value: object, kind: type, config_file: Path | None = None) -> object:
    """`value` as `kind`, from TOML's typed values or an environment string; never a silent
    conversion (a boolean port, a fractional port, a non-finite number)."""
    article = "an" if kind.__name__[0] in "aeiou" else "a"
    problem = _in_file(f"{describe(value)} is not {article} {kind.__name__}", config_file)
    if isinstance(value, bool) and kind is not bool:
        raise InvalidArgument(key, problem)
    fractional = isinstance(value, float) or (
        isinstance(value, str) and not value.strip().removeprefix("-").isdigit()
    )
    if kind is int and fractional:
        raise InvalidArgument(key, problem)
    try:
        result = kind(value)
    except (TypeError, ValueError):
        raise InvalidArgument(key, problem) from None
    if kind is float and not math.isfinite(result):
        raise InvalidArgument(
            key, _in_file(f"{describe(value)} is not a finite number", config_file)
        )
    return result


_EXPERIMENT_NUMBERS = (
    "reward_wait_seconds", "default_reward", "model_update_interval_seconds",
)  # fmt: skip
_EXPERIMENT_KEYS = {"name", "vw_args", "reward_aggregation", *_EXPERIMENT_NUMBERS}


def _experiment(index: int, data: object) -> ExperimentConfig:
    where = f"experiments[{index}]"
    if not isinstance(data, Mapping):
        raise InvalidArgument(where, f"{describe(data)} is not a table")
    unknown = set(data) - _EXPERIMENT_KEYS
    if unknown:
        raise InvalidArgument(where, f"unknown keys {sorted(unknown)}")
    numbers = {
        key: float(_coerce(f"{where}.{key}", data[key], float))  # type: ignore[arg-type]
        for key in _EXPERIMENT_NUMBERS
        if key in data
    }
    aggregation = str(data.get("reward_aggregation", "earliest")).lower()
    try:
        agg = Aggregation(aggregation)
    except ValueError:
        raise InvalidArgument(
            f"{where}.reward_aggregation", f"{describe(aggregation)} must be 'earliest' or 'sum'"
        ) from None
    try:
        return ExperimentConfig(
            name=str(data.get("name", "")),
            vw_args=str(data.get("vw_args", DEFAULT_VW_ARGS)),
            reward_wait_seconds=numbers.get("reward_wait_seconds", DEFAULT_REWARD_WAIT_SECONDS),
            default_reward=numbers.get("default_reward", 0.0),
            aggregation=agg,
            model_update_interval_seconds=numbers.get("model_update_interval_seconds", 0.0),
        )
    except InvalidArgument as exc:
        raise in_experiments_table(index, exc) from None


def in_experiments_table(index: int, exc: InvalidArgument) -> InvalidArgument:
    """An error about an experiment's config (ExperimentConfig, or VW refusing its vw_args
    when it is made), named as the file names it: `experiments[<index>].<key>`."""
    key = exc.field.split(".", 1)[-1]  # ExperimentConfig names fields "experiment.<key>"
    return InvalidArgument(f"experiments[{index}].{key}", exc.problem)


def _experiments(tables: object) -> tuple[ExperimentConfig, ...]:
    if not isinstance(tables, list):
        raise InvalidArgument("experiments", f"{describe(tables)} is not an array of tables")
    configs = tuple(_experiment(i, table) for i, table in enumerate(tables))
    first: dict[str, int] = {}
    for i, config in enumerate(configs):
        if first.setdefault(config.name, i) != i:
            raise InvalidArgument(
                f"experiments[{i}].name",
                f"{describe(config.name)} repeats experiments[{first[config.name]}].name",
            )
    return configs


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Defaults, then the file's [server] table, then BANDIT_* variables, then flags."""
    values: dict[str, object] = {}
    # Where each value came from, for errors: the user fixes the file's `server.port`, the
    # BANDIT_PORT variable or the --port flag, not an abstract "port".
    origin: dict[str, str] = {}
    experiments: tuple[ExperimentConfig, ...] = ()
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidArgument("config", f"cannot read {str(config_file)!r}: {exc}") from None
        server = data.get("server", {})
        if not isinstance(server, dict):
            raise InvalidArgument("server", f"{describe(server)} is not a table")
        for key, value in server.items():
            if key not in _SCALARS:
                raise InvalidArgument(f"server.{key}", "is not a known setting")
            origin[key] = f"server.{key}"
            values[key] = _coerce(origin[key], value, _SCALARS[key], config_file)
        experiments = _experiments(data.get("experiments", []))
    env = os.environ if environ is None else environ
    for key in _SCALARS:
        if ENV_PREFIX + key.upper() in env:
            origin[key] = ENV_PREFIX + key.upper()
            values[key] = _coerce(origin[key], env[origin[key]], _SCALARS[key])
    for key, value in (overrides or {}).items():
        if value is not None:
            origin[key] = "--" + key.replace("_", "-")
            values[key] = _coerce(origin[key], value, _SCALARS[key])
    try:
        return replace(Settings(), experiments=experiments, **values)  # type: ignore[arg-type]
    except InvalidArgument as exc:  # a range check: name where the value came from
        if exc.field not in origin:
            raise
        source = config_file if origin[exc.field].startswith("server.") else None
        raise InvalidArgument(origin[exc.field], _in_file(exc.problem, source)) from None


def _in_file(problem: str, config_file: Path | None) -> str:
    return problem if config_file is None else f"{problem} (in {str(config_file)!r})"
