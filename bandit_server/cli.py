"""The `bandit-server` command line: serve, export, and the offline tools."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from bandit_server import logging as log_config
from bandit_server.errors import BanditError, InvalidArgument
from bandit_server.offline.evaluate_cli import add_offline_commands

# What a shell reports for a program that SIGPIPE ended (128 + the signal's number).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _serve(args: argparse.Namespace) -> int:
    from bandit_server import settings
    from bandit_server.app import App

    config = settings.load(
        args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "data_dir": args.data_dir,
            "sync": args.sync,
            "log_level": args.log_level,
        },
    )
    log_config.configure(config.log_level)
    asyncio.run(App(config).serve_until_signal())
    return 0


def _export(args: argparse.Namespace) -> int:
    from bandit_server.export import iter_dsjson

    lines = iter_dsjson(args.data_dir, args.experiment)
    try:
        if args.output is None:
            for line in lines:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        else:
            _write_lines(args.output, lines)
    except BrokenPipeError:
        # The reader stopped early (`| head`, or a pipe given as --output): end quietly, as a
        # shell tool killed by SIGPIPE would, instead of a traceback. Python flushes stdout
        # again at exit, which would fail the same way, so it goes to /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return 0


def _write_lines(target: Path, lines: Iterator[str]) -> None:
    """Write `lines` to `target`: a regular file is replaced whole once every line is written
    (through a symlink, the file it points to; its mode kept), so a failure leaves the old one;
    anything else that exists (a pipe, `/dev/stdout`, a process substitution) is written
    straight."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        message = f"{str(target)!r} cannot be used: {exc.strerror}"
        raise InvalidArgument("--output", message) from exc
    if mode is not None and stat.S_ISDIR(mode):
        raise InvalidArgument("--output", f"{str(target)!r} is a directory")
    try:
        if mode is not None and not stat.S_ISREG(mode):
            with open(target, "w", encoding="utf-8") as out:
                out.writelines(line + "\n" for line in lines)
            return
        final = Path(os.path.realpath(target))
        # A name of its own: not another export's, nor a file the user keeps as `<name>.tmp`.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        tmp = Path(tmp_name)
        try:
            with open(fd, "w", encoding="utf-8") as out:
                os.chmod(out.fileno(), stat.S_IMODE(mode) if mode is not None else _new_file_mode())
                out.writelines(line + "\n" for line in lines)
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise InvalidArgument(
            "--output", f"{str(target)!r} cannot be written: {exc.strerror or exc}"
        ) from exc


def _new_file_mode() -> int:
    """What open() would give a new file here (mkstemp's is 0600): 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bandit-server", description="Self-hosted contextual-bandit service."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    serve.add_argument("--data-dir", type=Path, help="where the decision log and models live")
    serve.add_argument("--config", type=Path, help="TOML file: [server] settings, [[experiments]]")
    serve.add_argument("--sync", choices=("full", "normal"), help="fsync policy of the log")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(handler=_serve)

    export = commands.add_parser("export", help="write an experiment's decisions as DSJSON")
    export.add_argument("--data-dir", type=Path, required=True)
    export.add_argument("--experiment", required=True)
    export.add_argument("--format", choices=("dsjson",), default="dsjson")
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")
    export.set_defaults(handler=_export)

    add_offline_commands(commands)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BanditError as exc:
        print(f"bandit-server: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
