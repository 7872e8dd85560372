"""The options of an mteb run (thinking settings, batch sizes, backbone loading), each declared once.

:data:`OPTIONS` holds one :class:`Option` per field of :class:`GenerationSettings`, plus the switches that
``O1Embedder.configure`` takes besides them (``think``, ``num_thoughts``), the thought cache switch, the batch sizes
and ``model_kwargs``. The encoder wrapper's keyword options, the ``ModelMeta`` loader and experiment kwargs, the
flags of ``o1-embedder mteb run`` and their help text are all derived from it, so a new generation setting shows up
everywhere without another edit.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ...generation.settings import GenerationSettings

__all__ = ["CONFIGURE_OPTIONS", "GENERATION_OPTIONS", "OPTIONS", "ArgumentContainer", "Option", "WRAPPER_OPTIONS",
           "add_flags", "check_options", "name_suffix", "options_from_args", "split_options"]


class ArgumentContainer(Protocol):
    """An argparse parser or argument group: what a flag is added to."""

    def add_argument(self, *names: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Option:
    """One keyword option of the encoder wrapper, and (``on_command_line``) its flag.

    ``kind`` is the accepted type (``float`` accepts ints too; ``bool`` becomes ``--x / --no-x``); ``minimum``
    bounds counts; ``flag_name`` replaces the flag derived from ``name`` (``num_thoughts`` -> ``--num-thoughts``).
    """

    name: str
    kind: type
    help: str
    minimum: int | None = None
    on_command_line: bool = True
    flag_name: str | None = None
    changes_scores: bool = True
    #: a switch spelled as its opposite on the command line (``do_sample`` is ``--greedy`` in every command)
    inverse_flag: str | None = None

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--num-thoughts``."""
        return "--" + (self.flag_name or self.name.replace("_", "-"))

    def check(self, value: Any) -> None:
        """Raise ``TypeError`` (wrong type) or ``ValueError`` (below ``minimum``) naming the option."""
        accepted = (int, float) if self.kind is float else self.kind
        if (isinstance(value, bool) and self.kind is not bool) or not isinstance(value, accepted):
            raise TypeError(f"option {self.name!r} must be {self.kind.__name__}, got {type(value).__name__} {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"option {self.name!r} must be >= {self.minimum}, got {value!r}")

    def add_flag(self, parser: ArgumentContainer) -> None:
        """Add this option's flag to ``parser``; an absent flag parses to ``None`` (keep the model's setting)."""
        if self.inverse_flag:
            parser.add_argument(f"--{self.inverse_flag}", dest=self.name, action="store_const", const=False,
                                default=None, help=self.help)
            parser.add_argument(f"--no-{self.inverse_flag}", dest=self.name, action="store_const", const=True,
                                default=None, help=argparse.SUPPRESS)
        elif self.kind is bool:
            parser.add_argument(self.flag, dest=self.name, action=argparse.BooleanOptionalAction, default=None,
                                help=self.help)
        else:
            parser.add_argument(self.flag, dest=self.name, type=self.kind, default=None,
                                metavar=self.kind.__name__.upper(), help=self.help)


def _scalar_type(hint: Any) -> type:
    """``int`` for ``int | None``; the annotation itself for a plain type."""
    types = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return types[0] if types else hint


def _generation_options() -> tuple[Option, ...]:
    """One option per :class:`GenerationSettings` field, typed by its annotation, its default in the help."""
    hints = typing.get_type_hints(GenerationSettings)
    defaults = GenerationSettings()
    options = [Option(field.name, _scalar_type(hints[field.name]),
                      f"thought generation setting {field.name!r} (default: as saved in the model; "
                      f"{getattr(defaults, field.name)!r} in a new one)")
               for field in dataclasses.fields(GenerationSettings)]
    return tuple(dataclasses.replace(o, inverse_flag="greedy", help=_GREEDY_HELP) if o.name == "do_sample" else o
                 for o in options)


#: ``--greedy`` means what it means in eval, serve and think
_GREEDY_HELP = ("greedy decoding (do_sample=False), --no-greedy samples (default: as saved in the model; a new one "
                "samples)")


_GENERATION = _generation_options()

#: Every option, in the order used for experiment names and help.
OPTIONS: tuple[Option, ...] = (
    Option("think", bool, "queries think before they are embedded; --no-think embeds the query alone "
                          "(default: as saved in the model)"),
    Option("num_thoughts", int, "K thoughts per query, their embeddings averaged (default: as saved in the model)",
           minimum=1),
    *_GENERATION,
    Option("use_thought_cache", bool, "look thoughts up in, and store them to, the thought cache (default: on)",
           flag_name="thought-cache", changes_scores=False),
    Option("batch_size", int, "batch size for queries and documents, overriding mteb's encode_kwargs",
           minimum=1, on_command_line=False, changes_scores=False),  # mteb's own --batch-size covers the command line
    Option("query_batch_size", int, "batch size for queries only (thinking holds a KV cache per query); "
                                    "otherwise mteb's --batch-size applies to both sides", minimum=1,
           changes_scores=False),
    Option("model_kwargs", dict, "passed to the backbone's from_pretrained, e.g. {'dtype': 'bfloat16'}",
           on_command_line=False),
)
_BY_NAME = {option.name: option for option in OPTIONS}

#: Names of the wrapper's keyword options (and of ``o1_model_meta(..., **options)``).
WRAPPER_OPTIONS: tuple[str, ...] = tuple(_BY_NAME)
#: The options that are :class:`GenerationSettings` fields.
GENERATION_OPTIONS: tuple[str, ...] = tuple(option.name for option in _GENERATION)
#: The options that ``O1Embedder.configure`` takes.
CONFIGURE_OPTIONS: tuple[str, ...] = ("think", "num_thoughts", *GENERATION_OPTIONS)


def check_options(options: Mapping[str, Any], caller: str) -> dict[str, Any]:
    """The options that are set (not ``None``), type-checked, in :data:`OPTIONS` order; unknown names raise
    ``TypeError`` naming ``caller``. The order makes mteb's experiment names independent of the call's order."""
    unknown = sorted(set(options) - set(_BY_NAME))
    if unknown:
        raise TypeError(f"{caller} got unknown option(s) {unknown}; known: {', '.join(WRAPPER_OPTIONS)}")
    checked = {name: options[name] for name in WRAPPER_OPTIONS if options.get(name) is not None}
    for name, value in checked.items():
        _BY_NAME[name].check(value)
    return checked


def name_suffix(options: Mapping[str, Any]) -> str:
    """What the options that change scores add to a model's name (``"-think_False"``, ``"-num_thoughts_1"``; ``""``
    when none is set), so mteb's tables, which average the experiments of one model name, keep them apart."""
    parts = []
    for name, value in check_options(options, "name_suffix()").items():
        if _BY_NAME[name].changes_scores:
            text = "_".join(f"{k}_{v}" for k, v in sorted(value.items())) if isinstance(value, dict) else str(value)
            parts.append(f"{name}_{text}")
    return "".join(f"-{re.sub(r'[^A-Za-z0-9._-]', '_', part)}" for part in parts)


def split_options(kwargs: Mapping[str, Any], caller: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(checked options, the other keyword arguments) of a call that takes both."""
    options = check_options({k: v for k, v in kwargs.items() if k in _BY_NAME}, caller)
    return options, {k: v for k, v in kwargs.items() if k not in _BY_NAME}


def add_flags(parser: ArgumentContainer) -> None:
    """Add the flag of every command-line option to ``parser``."""
    for option in OPTIONS:
        if option.on_command_line:
            option.add_flag(parser)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on a command line parsed with :func:`add_flags`, checked."""
    given = {option.name: getattr(args, option.name) for option in OPTIONS if option.on_command_line}
    return check_options(given, "the command line")
