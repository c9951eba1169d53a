"""Server settings: frozen, validated, from a TOML file, environment variables and flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.errors import InvalidArgument, describe
from bandit_server.learners.vw import DEFAULT_VW_ARGS

ENV_PREFIX = "BANDIT_"


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
        if self.shutdown_grace_seconds < 0:
            raise InvalidArgument(
                "shutdown_grace_seconds", f"{self.shutdown_grace_seconds!r} must be >= 0"
            )
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
}


def _coerce(key: str, value: object) -> object:
    kind = _SCALARS[key]
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidArgument(key, f"{describe(value)} is not a {kind.__name__}") from None


def _experiment(index: int, data: Mapping[str, object]) -> ExperimentConfig:
    known = {
        "name", "vw_args", "reward_wait_seconds", "default_reward", "reward_aggregation",
        "model_update_interval_seconds",
    }  # fmt: skip
    unknown = set(data) - known
    if unknown:
        raise InvalidArgument(f"experiments[{index}]", f"unknown keys {sorted(unknown)}")
    aggregation = str(data.get("reward_aggregation", "earliest")).lower()
    try:
        agg = Aggregation(aggregation)
    except ValueError:
        raise InvalidArgument(
            f"experiments[{index}].reward_aggregation",
            f"{describe(aggregation)} must be 'earliest' or 'sum'",
        ) from None
    return ExperimentConfig(
        name=str(data.get("name", "")),
        vw_args=str(data.get("vw_args", DEFAULT_VW_ARGS)),
        reward_wait_seconds=float(data.get("reward_wait_seconds", 600.0)),  # type: ignore[arg-type]
        default_reward=float(data.get("default_reward", 0.0)),  # type: ignore[arg-type]
        aggregation=agg,
        model_update_interval_seconds=float(data.get("model_update_interval_seconds", 0.0)),  # type: ignore[arg-type]
    )


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Defaults, then the file's [server] table, then BANDIT_* variables, then flags."""
    values: dict[str, object] = {}
    experiments: tuple[ExperimentConfig, ...] = ()
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidArgument("config", f"cannot read {str(config_file)!r}: {exc}") from None
        server = data.get("server", {})
        for key, value in server.items():
            if key not in _SCALARS:
                raise InvalidArgument(f"server.{key}", "is not a known setting")
            values[key] = _coerce(key, value)
        experiments = tuple(_experiment(i, e) for i, e in enumerate(data.get("experiments", [])))
    env = os.environ if environ is None else environ
    for key in _SCALARS:
        if ENV_PREFIX + key.upper() in env:
            values[key] = _coerce(key, env[ENV_PREFIX + key.upper()])
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value)
    return replace(Settings(), experiments=experiments, **values)  # type: ignore[arg-type]
