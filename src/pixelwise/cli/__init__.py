"""The ``pixelwise`` command: parse arguments, call the Python API, print results.

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``. Building
the parser imports no torch (``pixelwise --help`` and ``--version`` stay fast): a command imports
the library it calls inside ``run``.

A user mistake (:class:`PixelwiseError`) prints one line and exits with status 2, and so does an
error of the system (an ``OSError``: a full disk, a read-only file system, no permission) with the
file it concerns and what to do; Ctrl-C exits with 130; a reader that goes away (``pixelwise
inspect --json | head -1``) ends the command quietly with 141, as a shell does on SIGPIPE;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import PixelwiseError
from ..version import __version__
from . import demo, evaluate, export, inspect, predict, serve, train

# In the order `pixelwise --help` lists them.
COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "inspect": inspect,
    "predict": predict,
    "export": export,
    "demo": demo,
    "serve": serve,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``pixelwise`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pixelwise",
        description="Semantic segmentation: train, evaluate and apply models that label every pixel.",
    )
    parser.add_argument("--version", action="version", version=f"pixelwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        module.add_parser(sub)
    # No abbreviations (`--image 3` is not `--images 3`): a flag added later must not change what
    # an existing command line means.
    for command in [parser, *sub.choices.values()]:
        command.allow_abbrev = False
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args``, except that an unknown option is reported with its subcommand's usage
    and, for a near miss, the option meant (``--epoch`` -> ``did you mean --epochs?``)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = sub.choices[args.command]
        command.error(f"unrecognized arguments: {' '.join(extra)}{_suggestion(command, extra)}")
    return args


def _suggestion(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """`` (did you mean --x?)`` for the first unknown option close to one of ``parser``'s, else ``""``."""
    import difflib

    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for word in extra:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.75)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Run ``pixelwise ARGV`` (default ``sys.argv[1:]``); returns the exit status."""
    try:
        # Parsing is inside: an option that reads a file (--config) may raise a user error too.
        args = parse_args(build_parser(), argv)
        status = COMMANDS[args.command].run(args)
        sys.stdout.flush()
        return status
    except PixelwiseError as e:
        return _error(str(e))
    except KeyboardInterrupt:
        print("pixelwise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except OSError as e:
        from ..fileio import os_error_message  # here, so that --help loads no numpy

        return _error(os_error_message(e))


def _error(message: str) -> int:
    """Print ``pixelwise: error: MESSAGE`` on stderr; the exit status of a user or system error."""
    print(f"pixelwise: error: {message}", file=sys.stderr)
    return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (a test's capture): nothing is flushed to the pipe at exit
