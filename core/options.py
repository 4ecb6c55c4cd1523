"""Command-line options made from a config dataclass, so every default and help text is written once.

Each field becomes `--field-name` with the field's type and default, and its help is the comment on
the field's line (the configs carry a comment on every field, as nanoGPT's do). A recipe — a small
JSON file of field values, e.g. core/train/recipes/*.json — fills the fields first, and options given
on the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

_COMMENTED_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


def field_comments(cls: type) -> dict[str, str]:
    """{field name: the comment on its line} of a dataclass, read from its source."""
    return {m.group(1): m.group(2) for m in map(_COMMENTED_FIELD.match, inspect.getsource(cls).splitlines()) if m}


def _parser_type(hint: Any) -> dict[str, Any]:
    """argparse keywords for a field's type: scalars, optional scalars, lists of str, JSON dicts, flags."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint) or hint
    if base in (typing.Union, types.UnionType) and len(args) == 1:  # X | None
        return _parser_type(args[0])
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if base is list:
        return {"nargs": "*", "type": args[0] if args else str}
    if base is dict:
        return {"type": json.loads, "metavar": "JSON"}
    return {"type": hint}


def add_options(
    parser: argparse.ArgumentParser, cls: type, choices: dict[str, Any] | None = None, recipe: bool = False
) -> None:
    """One option per field of dataclass `cls` (defaults left to the dataclass); `choices` limits
    fields to a set of values; `recipe` adds --recipe FILE.json."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        kwargs = _parser_type(hints[f.name])
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        required = default is None and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        text = comments.get(f.name, "").replace("%", "%%")  # argparse formats help with %
        text += " (required)" if required else ("" if default is None else f" (default: {default})")
        if choices and f.name in choices:
            kwargs["choices"] = list(choices[f.name])
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS, help=text, **kwargs
        )
    if recipe:
        parser.add_argument(
            "--recipe",
            type=Path,
            default=argparse.SUPPRESS,
            help="JSON file of field values (options given here override it)",
        )


def config_from_args(cls: type, args: argparse.Namespace):
    """The dataclass from a recipe (if given) overridden by the options given; a missing required
    field or an unknown recipe key is a usage error of `args.parser` (exit 2)."""
    parser = args.parser
    given = vars(args)
    values: dict[str, Any] = {}
    if getattr(args, "recipe", None) is not None:
        try:
            values = json.loads(args.recipe.read_text())
        except (OSError, ValueError) as e:
            parser.error(f"--recipe {args.recipe}: {e}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            parser.error(f"--recipe {args.recipe}: unknown fields {unknown}")
    values.update({k: v for k, v in given.items() if k in {f.name for f in dataclasses.fields(cls)}})
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        parser.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        parser.error(str(e))
