"""Try a VW command line in a throwaway process before the server builds a model with it.

Some command lines end the process that builds the model (--help and --version exit), crash it
(--bag 0 and --boosting 0 when building, --ksvm when saving) or block it (--active waits on a
socket). Inside the server any of these would stop every experiment, so the server first builds,
uses, saves and reloads a model with the command line in a child process, and refuses it if the
child does not finish normally. Ordinary errors are left to validate_args, which quotes VW.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
from pathlib import Path

from bandit_server.core.dsjson import Label, learning_line, prediction_line
from bandit_server.errors import InvalidArgument, Unavailable, describe

PROBE_SECONDS = 30.0
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
_SIGNALS = {int(s) for s in signal.Signals}
_DONE = "vw-probe-done"
# Two actions, a context with a string and a number: enough to run every reduction once.
_C_JSON = '{"User":{"s":"a","n":1.5},"_multi":[{"Action":{"v":"x"}},{"Action":{"v":"y"}}]}'


def probe(args: str, field: str) -> None:
    """Raise InvalidArgument if building and using a model with `args` does not finish
    normally in a child process within PROBE_SECONDS."""
    problem = _problem(args)
    if problem is not None:
        raise InvalidArgument(field, f"{describe(args)} {problem}")


@functools.lru_cache(maxsize=256)  # one try per command line and server run, refusals too
def _problem(args: str) -> str | None:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bandit_server.learners.vw_probe", args],
            cwd=_PACKAGE_PARENT,  # `-m` looks in the working directory first
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return (
            f"did not let VW finish building and using a model within {PROBE_SECONDS:g} s "
            "(an option that waits on a socket or input?)"
        )
    except OSError as exc:  # no process to be had: not the command line's fault (and,
        # raised rather than returned, not cached)
        raise Unavailable(f"could not start a process to try vw_args: {exc}") from exc
    if done.returncode == 0 and done.stdout.rstrip().endswith(_DONE.encode()):
        return None
    if done.returncode < 0:
        number = -done.returncode
        name = signal.Signals(number).name if number in _SIGNALS else f"signal {number}"
        return f"crashes VW ({name}) while building, using or saving a model"
    return (
        f"makes VW end its process (exit status {done.returncode}) while building, using or "
        "saving a model"
    )


def _try(args: str) -> None:
    from bandit_server.learners.vw import VWPolicy  # here: the parent needs no VW import

    try:
        policy = VWPolicy(args)
        policy.predict_one(prediction_line(_C_JSON))
        policy.learn_one(learning_line(_C_JSON, Label(0, 0.5, -1.0)))
        # The server snapshots, checkpoints and restores every model (--ksvm crashes here).
        VWPolicy.load(args, policy.serialize()).predict_one(prediction_line(_C_JSON))
    except Exception:  # an ordinary rejection: validate_args reports it with VW's message
        pass
    print(_DONE, flush=True)


if __name__ == "__main__":
    _try(sys.argv[1])
