"""``cochseg3d <verb>``: a thin argparse layer over the library's functions.

Each verb lives in ``cochseg3d/commands/<verb>.py`` and defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; heavy imports stay inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from cochseg3d import __version__, commands
from cochseg3d.utils import display_path, setup_logging

log = logging.getLogger("cochseg3d")


class UserError(Exception):
    """Bad input from the user: printed as one clear line, exit status 2."""


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"cochseg3d.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cochseg3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cochseg3d {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    _printable_stdout()
    try:
        return int(args._run(args) or 0)
    except (UserError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"cochseg3d {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system refused a read or write: name the file, no traceback
        where = f"{display_path(exc.filename)}: " if exc.filename else ""
        print(f"cochseg3d {args.command}: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cochseg3d {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line for the user, the traceback with -v
        if args.verbose:
            raise
        print(f"cochseg3d {args.command}: unexpected error: {type(exc).__name__}: {_one_line(exc)} "
              "(run with -v for the traceback, and please report it)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _printable_stdout() -> None:
    """File names need not be UTF-8: print their undecodable bytes escaped instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot be reconfigured keeps its setting
                pass


if __name__ == "__main__":
    sys.exit(main())
