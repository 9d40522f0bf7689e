"""Command-line options generated from :class:`~pixelwise.training.config.TrainConfig` field metadata.

One option per field whose metadata does not say ``cli: False``; the flag is the field name with
dashes, the help text and choices come from the metadata (keys listed in
``pixelwise.training.config``) and the default is appended to the help. Booleans become
``--x/--no-x`` pairs, ``dict`` fields repeatable ``KEY=VALUE`` flags, fields with a ``const``
flags whose value may be left out.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import Field, fields

from ..training.config import TrainConfig, field_types, flag_name
from .arguments import whole_number

GROUP_TITLES = {
    "model": "model",
    "optimisation": "optimisation",
    "augmentation": "augmentation",
    "data": "data (splits and loading)",
    "format": "data format",
    "run": "run",
}


class OnOff(argparse.BooleanOptionalAction):
    """``--x`` / ``--no-x``; the help text shows the default itself (as every generated option does)."""

    def __init__(self, option_strings, dest, default=None, help=None, **kwargs):
        super().__init__(option_strings, dest, default=default, **kwargs)
        self.help = help


class KeyValues(argparse.Action):
    """A repeatable ``KEY=VALUE`` flag collecting a dict (its ``type`` returns ``(key, value)``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        collected = dict(getattr(namespace, self.dest, None) or {})
        key, value = values
        collected[key] = value
        setattr(namespace, self.dest, collected)


def cli_fields(group: str | None = None) -> list[Field]:
    """The TrainConfig fields that are command-line options (of one ``group``, or all)."""
    return [
        f
        for f in fields(TrainConfig)
        if f.metadata.get("cli", True) and (group is None or f.metadata.get("group") == group)
    ]


def default_text(f: Field) -> str:
    """How ``--help`` shows the default of field ``f``."""
    if "default_text" in f.metadata:
        return f.metadata["default_text"]
    value = getattr(TrainConfig(), f.name)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value in ("", {}, []):
        return "none"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _checked(parse, name: str):
    """``parse`` (raising ValueError) as an argparse type (raising ArgumentTypeError with its message)."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


def flag_kwargs(f: Field, default=argparse.SUPPRESS, shown_default: str | None = None) -> dict:
    """``add_argument`` keyword arguments for field ``f``.

    ``default`` is the parsed value when the flag is absent (SUPPRESS: no attribute, so that the
    flags given can be told from the defaults); ``shown_default`` replaces the default in the help.
    """
    meta = f.metadata
    kind = _kind(field_types()[f.name])
    text = f"{meta['help']} (default: {shown_default or default_text(f)})"
    kw: dict = {"default": default, "help": text.replace("%", "%%")}
    if kind is bool:
        kw["action"] = OnOff
    elif kind is dict:
        kw.update(action=KeyValues, type=_checked(meta["parse"], f.name))
    elif "parse" in meta:
        kw["type"] = _checked(meta["parse"], f.name)
    elif kind is int:
        kw["type"] = whole_number(meta.get("min"))
    elif kind is float:
        kw["type"] = float
    choices = meta.get("choices")
    if choices is not None:
        kw["choices"] = list(choices() if callable(choices) else choices)
    if "const" in meta:
        kw.update(nargs="?", const=meta["const"])
    if "metavar" in meta or kind is int:
        kw["metavar"] = meta.get("metavar", "N")
    return kw


def _kind(hint) -> type:
    """The plain type of a field annotation: ``str | None`` -> str, ``tuple[float, float]`` -> tuple."""
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def add_field_flag(container, f: Field, default=argparse.SUPPRESS, shown_default: str | None = None):
    """Add the option of field ``f`` to ``container`` (a parser or an argument group); returns the action."""
    kw = flag_kwargs(f, default, shown_default)
    if f.metadata.get("positional"):
        kw["nargs"] = "?"
        kw["help"] = f.metadata["help"]
        return container.add_argument(f.name, **kw)
    action = container.add_argument(flag_name(f.name), dest=f.name, **kw)
    if "off" in f.metadata:  # --no-pretrained = --pretrained none
        off = f.metadata["off"]
        container.add_argument(
            "--no-" + flag_name(f.name)[2:],
            dest=f.name,
            action="store_const",
            const=off,
            default=kw["default"],
            help=f"the same as {flag_name(f.name)} {off}",
        )
    return action


def add_config_flags(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """Add every TrainConfig option to ``parser``, in argument groups; returns the groups by name.

    The options default to SUPPRESS: the parsed namespace holds exactly the options given.
    """
    groups = {name: parser.add_argument_group(title) for name, title in GROUP_TITLES.items()}
    for f in cli_fields():
        add_field_flag(parser if f.metadata.get("positional") else groups[f.metadata["group"]], f)
    return groups


def add_old_spelling(container, old: str, action: argparse.Action) -> None:
    """Accept ``old``, the earlier name of ``action``'s flag; hidden from ``--help``, noted on stderr."""
    new = action.option_strings[0]

    class Renamed(type(action)):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"pixelwise: {option_string} is now called {new}", file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    kw = dict(dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, action=Renamed)
    if action.nargs != 0:
        kw.update(type=action.type, choices=action.choices, metavar=action.metavar)
    container.add_argument(old, **kw)
