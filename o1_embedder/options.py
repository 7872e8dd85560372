"""Command-line options generated from settings dataclasses, so an option can never drift from its field.

Each field becomes ``--field-name`` with its type, default and help (``field(metadata={"help": ...})``);
a ``bool`` field that defaults to True becomes ``--no-field-name`` (or ``metadata["no_flag"]``, with help from
``metadata["no_help"]``); a field whose metadata says ``positional`` becomes a positional argument
(``metadata["nargs"]``: how many values); ``metadata["choices"]`` limits the values; ``metadata["short"]`` adds
a short flag (``-o``), ``metadata["required"]`` makes an option with a default required on the command line,
``metadata["group"]`` puts the option under a titled group of the help; a field without a
default is a required option.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

__all__ = ["HelpFormatter", "add_dataclass_options", "check_paths", "dataclass_from_args"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` where it tells something: not for switches, ``None`` or help that names its default."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default in (None, argparse.SUPPRESS, True, False) or "default" in help_text.lower() \
                or action.nargs == 0:
            return help_text
        return super()._get_help_string(action)


def _base_type(hint) -> type:
    """``int | None`` -> ``int``; ``float`` -> ``float``; ``list[str]`` -> ``list``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _base_type(args[0])
    if typing.get_origin(hint) is list:
        return list
    return hint


def add_dataclass_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls,
                          skip: tuple[str, ...] = (), overrides: dict[str, dict[str, Any]] | None = None) -> None:
    """Add one option per field of the dataclass ``cls`` (see the module docstring).

    ``overrides`` maps a field name to extra ``add_argument`` keywords (``choices``, ``type`` ...).
    """
    hints = typing.get_type_hints(cls)
    groups: dict[str, Any] = {}
    root = parser
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        title = f.metadata.get("group")
        parser = root if title is None or not isinstance(root, argparse.ArgumentParser) else \
            groups.setdefault(title, root.add_argument_group(title))
        kind = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        extra = dict((overrides or {}).get(f.name, {}))
        if "choices" in f.metadata:
            extra.setdefault("choices", f.metadata["choices"])
        default = extra.pop("default", default)
        flags = [*([f.metadata["short"]] if "short" in f.metadata else []), "--" + f.name.replace("_", "-")]
        if "nargs" in f.metadata:
            extra.setdefault("nargs", f.metadata["nargs"])
        if f.metadata.get("positional"):
            if extra.get("nargs") in ("?", "*"):
                extra.setdefault("default", default)
            parser.add_argument(f.name, help=help_text, **extra)
        elif kind is bool:
            if default is True:
                parser.add_argument(f.metadata.get("no_flag", "--no-" + f.name.replace("_", "-")), dest=f.name,
                                    action="store_false", help=f.metadata.get("no_help", help_text), **extra)
            else:  # False, or None for "keep what the model says"
                parser.add_argument(*flags, dest=f.name, action="store_const", const=True, default=default,
                                    help=help_text, **extra)
        elif kind is list:
            extra.setdefault("nargs", "*")
            parser.add_argument(*flags, dest=f.name, default=default, help=help_text, **extra)
        else:
            extra.setdefault("type", kind if kind in (int, float, str) else str)
            required = not has_default or bool(f.metadata.get("required"))
            parser.add_argument(*flags, dest=f.name, default=default, required=required,
                                help=help_text + (" (required)" if required else ""), **extra)


def dataclass_from_args(cls, args: argparse.Namespace, **changes):
    """An instance of ``cls`` from the parsed options of :func:`add_dataclass_options` (plus ``changes``)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **changes})


def check_paths(settings: Any, *names: str) -> None:
    """Raise ``ValueError`` naming the first of ``names`` that is not a non-empty path string on ``settings``."""
    for name in names:
        value = getattr(settings, name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} is required (a path), got {value!r}")
