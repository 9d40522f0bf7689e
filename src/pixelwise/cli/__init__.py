"""The ``pixelwise`` command: parse arguments, call the Python API, print results.

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``. Building
the parser imports no torch (``pixelwise --help`` and ``--version`` stay fast): a command imports
the library it calls inside ``run``.

A user mistake (:class:`PixelwiseError`) prints one line and exits with status 2; Ctrl-C exits
with 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
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
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args``, except that an unknown option is reported with its subcommand's usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run ``pixelwise ARGV`` (default ``sys.argv[1:]``); returns the exit status."""
    args = parse_args(build_parser(), argv)
    try:
        return COMMANDS[args.command].run(args)
    except PixelwiseError as e:
        print(f"pixelwise: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pixelwise: interrupted", file=sys.stderr)
        return 130
