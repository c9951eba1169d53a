"""vw_args that would end, crash or block the process building the model are refused first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bandit_server.errors import InvalidArgument
from bandit_server.learners import vw_probe
from bandit_server.learners.vw import validate_args

FIELD = "experiment.vw_args"


@pytest.mark.parametrize(
    ("args", "signal_name"),
    [
        ("--cb_explore_adf --bag 0", "SIGSEGV"),  # on building the model
        ("--cb_explore_adf --boosting 0", "SIGFPE"),
        ("--cb_explore_adf --ksvm", "SIGSEGV"),  # on saving it
    ],
)
def test_a_command_line_that_crashes_vw_is_refused_naming_the_signal(
    args: str, signal_name: str
) -> None:
    """Each of these kills the process that builds or saves the model; the child dies, not us."""
    with pytest.raises(InvalidArgument) as info:
        validate_args(args, FIELD, isolate=True)
    assert info.value.field == FIELD
    assert str(info.value) == (
        f"{FIELD}: {args!r} crashes VW ({signal_name}) while building, using or saving a model"
    )


@pytest.mark.parametrize("option", ["--help", "-h", "--version", "--active"])
def test_driver_options_that_exit_or_listen_are_refused_before_any_child(option: str) -> None:
    """--help and --version end the process; --active waits on a socket."""
    with pytest.raises(InvalidArgument) as info:
        validate_args(f"--cb_explore_adf {option}", FIELD, isolate=True)
    assert f"option {option!r} controls files or VW's own driver" in str(info.value)


def test_a_child_that_ends_without_finishing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that exits before it reports done (as --help does) refuses the command line."""
    monkeypatch.setattr(vw_probe, "_DONE", "never-printed")
    vw_probe._problem.cache_clear()
    with pytest.raises(InvalidArgument) as info:
        vw_probe.probe("--cb_explore_adf --epsilon 0.3", FIELD)
    assert "makes VW end its process (exit status 0)" in str(info.value)


def test_a_child_that_does_not_finish_in_time_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vw_probe, "PROBE_SECONDS", 0.001)
    vw_probe._problem.cache_clear()
    with pytest.raises(InvalidArgument) as info:
        vw_probe.probe("--cb_explore_adf --epsilon 0.3", FIELD)
    assert "did not let VW finish building and using a model within 0.001 s" in str(info.value)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    yield
    vw_probe._problem.cache_clear()  # tests above change what a try gives


def test_ordinary_errors_still_carry_vws_message_and_good_args_pass() -> None:
    """The child leaves ordinary rejections to the in-process check, which quotes VW."""
    with pytest.raises(InvalidArgument) as info:
        validate_args("--cb_explore_adf --epsilon banana", FIELD, isolate=True)
    assert "rejected by VW: " in str(info.value)
    assert validate_args("--cb_explore_adf --squarecb -q UA", FIELD, isolate=True)
