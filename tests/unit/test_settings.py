"""Server settings: defaults, then the TOML file, then BANDIT_* variables, then flags."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bandit_server import settings
from bandit_server.core.experiment import Aggregation, ExperimentConfig
from bandit_server.errors import InvalidArgument
from bandit_server.learners.vw import DEFAULT_VW_ARGS

FULL_FILE = """
[server]
host = "0.0.0.0"
port = 6000
data_dir = "/var/lib/bandit"
sync = "full"
checkpoint_interval_seconds = 5.5
shutdown_grace_seconds = 2
log_level = "debug"
max_actions = 50

[[experiments]]
name = "home"
vw_args = "--cb_explore_adf --squarecb -q UA"
reward_wait_seconds = 60
default_reward = -0.5
reward_aggregation = "SUM"
model_update_interval_seconds = 1.5

[[experiments]]
name = "search"
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bandit.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _error(tmp_path: Path, text: str = "", **kwargs: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        settings.load(_file(tmp_path, text), **{"environ": {}, **kwargs})  # type: ignore[arg-type]
    return info.value


def test_defaults_without_file_environment_or_flags() -> None:
    """With nothing given, load() returns the dataclass defaults and no experiments."""
    assert settings.load(None, environ={}) == settings.Settings()


def test_file_sets_server_values_and_experiments(tmp_path: Path) -> None:
    """[server] sets the settings; each [[experiments]] is a config with documented defaults."""
    loaded = settings.load(_file(tmp_path, FULL_FILE), environ={})
    assert loaded == settings.Settings(
        host="0.0.0.0",
        port=6000,
        data_dir=Path("/var/lib/bandit"),
        sync="full",
        checkpoint_interval_seconds=5.5,
        shutdown_grace_seconds=2.0,
        log_level="debug",
        max_actions=50,
        experiments=(
            ExperimentConfig(
                name="home",
                vw_args="--cb_explore_adf --squarecb -q UA",
                reward_wait_seconds=60.0,
                default_reward=-0.5,
                aggregation=Aggregation.SUM,
                model_update_interval_seconds=1.5,
            ),
            ExperimentConfig(name="search", vw_args=DEFAULT_VW_ARGS),
        ),
    )
    assert isinstance(loaded.data_dir, Path)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """BANDIT_<KEY> variables beat the file; keys they do not name keep the file's value."""
    loaded = settings.load(
        _file(tmp_path, FULL_FILE),
        environ={"BANDIT_PORT": "7000", "BANDIT_DATA_DIR": "/tmp/d", "OTHER_PORT": "1"},
    )
    assert loaded.port == 7000 and loaded.data_dir == Path("/tmp/d")
    assert loaded.host == "0.0.0.0" and loaded.sync == "full"


def test_flags_override_the_environment_and_none_flags_are_ignored(tmp_path: Path) -> None:
    """A flag beats both file and environment; a flag left at None changes nothing."""
    loaded = settings.load(
        _file(tmp_path, FULL_FILE),
        environ={"BANDIT_PORT": "7000", "BANDIT_HOST": "10.0.0.1"},
        overrides={"port": 8000, "host": None, "log_level": "error"},
    )
    assert (loaded.port, loaded.host, loaded.log_level) == (8000, "10.0.0.1", "error")


def test_environment_alone_sets_values_without_a_file() -> None:
    """Without a file, BANDIT_* variables are coerced to each setting's type."""
    loaded = settings.load(
        None,
        environ={"BANDIT_CHECKPOINT_INTERVAL_SECONDS": "2.5", "BANDIT_SYNC": "full"},
    )
    assert loaded.checkpoint_interval_seconds == 2.5 and loaded.sync == "full"


def test_an_unknown_server_key_is_invalid_naming_it(tmp_path: Path) -> None:
    """A [server] key that is not a setting is rejected as `server.<key>`."""
    error = _error(tmp_path, "[server]\nprot = 1\n")
    assert error.field == "server.prot"


def test_an_unknown_experiment_key_is_invalid_naming_the_table(tmp_path: Path) -> None:
    """An unknown key in the second [[experiments]] table names `experiments[1]` and the key."""
    error = _error(tmp_path, '[[experiments]]\nname = "a"\n[[experiments]]\nname = "b"\nwait = 1\n')
    assert error.field == "experiments[1]"
    assert "wait" in str(error)


@pytest.mark.parametrize(
    ("text", "environ", "field"),
    [
        ('[server]\nport = "abc"\n', {}, "server.port"),
        ("", {"BANDIT_PORT": "abc"}, "BANDIT_PORT"),
        ("", {"BANDIT_PORT": "70000"}, "BANDIT_PORT"),
        ("[server]\nport = -1\n", {}, "server.port"),
        ('[server]\nsync = "sometimes"\n', {}, "server.sync"),
        ('[server]\nlog_level = "loud"\n', {}, "server.log_level"),
        ("[server]\ncheckpoint_interval_seconds = 0\n", {}, "server.checkpoint_interval_seconds"),
        ("", {"BANDIT_CHECKPOINT_INTERVAL_SECONDS": "nan"}, "BANDIT_CHECKPOINT_INTERVAL_SECONDS"),
        ("[server]\nshutdown_grace_seconds = -1\n", {}, "server.shutdown_grace_seconds"),
        ("", {"BANDIT_SHUTDOWN_GRACE_SECONDS": "soon"}, "BANDIT_SHUTDOWN_GRACE_SECONDS"),
        ("[server]\ndata_dir = 5\n", {}, "server.data_dir"),
        ("[server]\nmax_actions = 0\n", {}, "server.max_actions"),
        ("", {"BANDIT_MAX_ACTIONS": "-1"}, "BANDIT_MAX_ACTIONS"),
        ("", {"BANDIT_MAX_ACTIONS": "2.5"}, "BANDIT_MAX_ACTIONS"),
        (
            '[[experiments]]\nname = "a"\nreward_aggregation = "max"\n',
            {},
            "experiments[0].reward_aggregation",
        ),
        ('[[experiments]]\nname = "9a"\n', {}, "experiments[0].name"),
        ("[[experiments]]\nvw_args = '--cb_explore_adf'\n", {}, "experiments[0].name"),
    ],
)
def test_bad_values_are_invalid_naming_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], field: str
) -> None:
    """Bad values are InvalidArgument naming where they were set: the file's `server.<key>`
    (and the file), the BANDIT_ variable, or the flag."""
    error = _error(tmp_path, text, environ=environ)
    assert error.field == field


def test_a_bad_flag_is_invalid_naming_the_key(tmp_path: Path) -> None:
    """Flags are checked like everything else, and named as flags."""
    error = _error(tmp_path, "", overrides={"port": "http"})
    assert error.field == "--port"


@pytest.mark.parametrize("text", ["[server\nport = 1\n", "port = = 1\n"])
def test_a_malformed_file_is_invalid_naming_config(tmp_path: Path, text: str) -> None:
    """TOML that does not parse is InvalidArgument on `config`, quoting the file name."""
    error = _error(tmp_path, text)
    assert error.field == "config"
    assert "bandit.toml" in str(error)


def test_a_missing_file_is_invalid_naming_config(tmp_path: Path) -> None:
    """A file that cannot be read is InvalidArgument on `config`."""
    with pytest.raises(InvalidArgument) as info:
        settings.load(tmp_path / "absent.toml", environ={})
    assert info.value.field == "config"


# -- bugs ------------------------------------------------------------------------------------


def test_a_non_numeric_experiment_number_is_invalid_naming_the_key(tmp_path: Path) -> None:
    """A string where an experiment number belongs is InvalidArgument naming the key."""
    error = _error(tmp_path, '[[experiments]]\nname = "a"\nreward_wait_seconds = "soon"\n')
    assert error.field == "experiments[0].reward_wait_seconds"


def test_an_invalid_experiment_value_names_its_table(tmp_path: Path) -> None:
    """A bad value in the second [[experiments]] table is reported under experiments[1]."""
    error = _error(
        tmp_path,
        '[[experiments]]\nname = "a"\n[[experiments]]\nname = "b"\nreward_wait_seconds = -1\n',
    )
    assert error.field == "experiments[1].reward_wait_seconds"


def test_a_repeated_experiment_name_is_invalid(tmp_path: Path) -> None:
    """Two [[experiments]] tables with one name are rejected naming the second."""
    error = _error(tmp_path, '[[experiments]]\nname = "a"\n[[experiments]]\nname = "a"\n')
    assert error.field == "experiments[1].name"


def test_a_nan_shutdown_grace_is_invalid() -> None:
    """A NaN grace period is rejected naming shutdown_grace_seconds."""
    with pytest.raises(InvalidArgument) as info:
        settings.load(None, environ={"BANDIT_SHUTDOWN_GRACE_SECONDS": "nan"})
    assert info.value.field == "BANDIT_SHUTDOWN_GRACE_SECONDS"


@pytest.mark.parametrize("value", ["true", "8080.7"])
def test_a_port_of_the_wrong_toml_type_is_invalid(tmp_path: Path, value: str) -> None:
    """A boolean or fractional port in the file is rejected, not silently converted."""
    error = _error(tmp_path, f"[server]\nport = {value}\n")
    assert error.field == "server.port"
    assert "bandit.toml" in str(error)  # which file to fix


def test_a_server_key_that_is_not_a_table_is_invalid(tmp_path: Path) -> None:
    """`server` must be a table; anything else is InvalidArgument naming it."""
    error = _error(tmp_path, "server = 5\n")
    assert error.field == "server"
