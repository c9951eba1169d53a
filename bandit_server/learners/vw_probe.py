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

from bandit_server.core.dsjson import Label, learning_line, prediction_line
from bandit_server.errors import InvalidArgument, describe

PROBE_SECONDS = 30.0
_DONE = "vw-probe-done"
# Two actions, a context with a string and a number: enough to run every reduction once.
_C_JSON = '{"User":{"s":"a","n":1.5},"_multi":[{"Action":{"v":"x"}},{"Action":{"v":"y"}}]}'


@functools.lru_cache(maxsize=256)  # the same command line needs one try per server run
def probe(args: str, field: str) -> None:
    """Raise InvalidArgument if building and using a model with `args` does not finish
    normally in a child process within PROBE_SECONDS."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bandit_server.learners.vw_probe", args],
            capture_output=True,
            text=True,
            timeout=PROBE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidArgument(
            field,
            f"{describe(args)}: VW did not finish building and using a model within "
            f"{PROBE_SECONDS:g} s (an option that waits on a socket or input?)",
        ) from None
    if done.returncode == 0 and done.stdout.rstrip().endswith(_DONE):
        return
    if done.returncode < 0:
        how = f"crashes VW ({signal.Signals(-done.returncode).name})"
    else:
        how = f"makes VW end its process (exit status {done.returncode})"
    raise InvalidArgument(field, f"{describe(args)} {how} while building, using or saving a model")


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
