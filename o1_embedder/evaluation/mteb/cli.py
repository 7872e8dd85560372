"""``o1-embedder mteb run``: mteb's own command line, with an o1-embedder model and local BEIR folders registered.

A plain ``mteb run -m NAME`` looks models up only in mteb's registry and ``-t NAME`` only finds mteb's tasks, so a
separate ``mteb`` process can see neither a model folder nor a local BEIR folder. Here the o1-embedder options are
taken out of the command line first (model, thinking settings, ``--beir-task`` folders); the rest is parsed and run
by mteb's own parser (``mteb.cli.build_cli``) in this process, with the model and the tasks registered until the
command ends. Subcommands other than ``run`` and ``mock-run`` go to mteb unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import mteb
from mteb.models import ModelMeta

from .meta import o1_model_meta
from .options import add_flags, options_from_args
from .registry import is_o1_embedder, registered
from .tasks import LocalBeirRetrieval, beir_task_class

__all__ = ["main", "run_mteb_cli"]

_MODEL_COMMANDS = ("run", "mock-run")
_DEFAULT_LANGUAGES = ("eng-Latn",)


def _o1_parser(command: str) -> argparse.ArgumentParser:
    """The o1-embedder options of ``command`` (``--beir-*`` for ``run`` only); help comes from the options."""
    parser = argparse.ArgumentParser(prog=f"o1-embedder mteb {command}", add_help=False, allow_abbrev=False,
                                     description="o1-embedder options, before or after mteb's own (listed below).")
    parser.add_argument("-m", "--model", metavar="PATH",
                        help='o1-embedder model folder, hub id (from the local HF cache) or "o1-embedder" (the '
                             "embedded default); a name in mteb's registry is passed through unchanged")
    parser.add_argument("--model-name", metavar="ORG/NAME",
                        help="name recorded in the results (default: local/<folder name>)")
    if command == "run":
        parser.add_argument("--beir-task", action="append", default=[], metavar="[NAME=]PATH",
                            help="a local BEIR folder as a retrieval task (repeatable; default name: the folder name)")
        parser.add_argument("--beir-split", default="test", metavar="SPLIT",
                            help="qrels split of the --beir-task folders (default: test)")
        parser.add_argument("--beir-language", action="append", metavar="CODE",
                            help="mteb language code of the --beir-task folders (repeatable; default: eng-Latn)")
    add_flags(parser.add_argument_group("thinking and batching"))
    return parser


def _exit_code(error: SystemExit) -> int:
    """argparse's exit status as an int (``None`` is success)."""
    code = error.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def _mteb_parser() -> argparse.ArgumentParser:
    """mteb's own command-line parser (``mteb.cli.build_cli``)."""
    from mteb.cli.build_cli import build_cli

    return build_cli()


def _is_mteb_model(name: str) -> bool:
    """Whether ``name`` is one of mteb's own models (a baseline to run on the same local tasks)."""
    if os.path.isdir(name):
        return False
    try:
        return not is_o1_embedder(mteb.get_model_meta(name))
    except KeyError:
        return False


def _models(ours: argparse.Namespace, args: argparse.Namespace, options: dict[str, Any]) -> list[ModelMeta]:
    """The model to register (none for one of mteb's own); points ``args.model`` at its registered name."""
    if ours.model is None:
        raise ValueError("-m/--model is required")
    if _is_mteb_model(ours.model):
        if options or ours.model_name:
            raise ValueError(f"{ours.model!r} is one of mteb's own models: o1-embedder options don't apply")
        return []
    meta = o1_model_meta(ours.model, name=ours.model_name, revision=getattr(args, "model_revision", None), **options)
    args.model = meta.name
    return [meta]


def _split_task_spec(spec: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a plain path (or an existing folder whose name has ``=``) -> (None, PATH)."""
    if os.path.isdir(spec) or "=" not in spec:
        return None, spec
    name, path = spec.split("=", 1)
    return name or None, path


def _local_tasks(ours: argparse.Namespace, args: argparse.Namespace) -> list[type[LocalBeirRetrieval]]:
    """Task classes for the ``--beir-task`` folders; their names are added to mteb's ``-t`` list."""
    specs = getattr(ours, "beir_task", [])
    if not specs:
        return []
    if args.benchmarks:
        raise ValueError("--beir-task cannot be combined with -b/--benchmarks (mteb then ignores tasks)")
    languages = tuple(ours.beir_language or _DEFAULT_LANGUAGES)
    tasks = [beir_task_class(path, name, ours.beir_split, languages=languages)
             for name, path in map(_split_task_spec, specs)]
    names = [task.metadata.name for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"--beir-task names must be distinct, got {names}; use NAME=PATH")
    args.tasks = list(args.tasks or []) + names
    return tasks


def _check_stale_results(args: argparse.Namespace, tasks: list[type[LocalBeirRetrieval]]) -> None:
    """Refuse to run where mteb would reuse a local task's results computed on other files.

    mteb's ``only-missing`` (its default) and ``never`` strategies keep a result file whatever its dataset
    revision; a local folder's revision is a hash of its files, so an edited folder would be reported with the
    scores of its earlier content.
    """
    if getattr(args, "overwrite", False) or getattr(args, "overwrite_strategy", None) == "always" or not tasks:
        return
    root = Path(getattr(args, "output_folder", None) or "results")
    model_dir = str(args.model).replace("/", "__")
    for task in tasks:
        name, revision = task.metadata.name, task.metadata.dataset["revision"]
        for found in sorted(root.rglob(f"{name}.json")):
            if model_dir not in found.parts:
                continue
            try:
                recorded = json.loads(found.read_text(encoding="utf-8")).get("dataset_revision")
            except (OSError, ValueError, AttributeError):
                continue
            if recorded not in (None, revision):
                raise ValueError(f"{found} holds results for task {name!r} on other files (dataset revision "
                                 f"{recorded}; the folder {task.metadata.dataset['path']} now hashes to {revision}), "
                                 f"and mteb would report them again: pass --overwrite-strategy always, or use "
                                 f"another --output-folder")


def _run_mteb_unchanged(argv: Sequence[str]) -> int:
    """A subcommand that needs no o1-embedder model, run by mteb as ``mteb ...`` would."""
    parser = _mteb_parser()
    if not argv:
        parser.print_help()
        return 2
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return _exit_code(e)
    args.func(args)
    return 0


def run_mteb_cli(argv: Sequence[str]) -> int:
    """Run mteb's command line in-process, with an o1-embedder model and local BEIR folders registered.

    ``argv`` is what follows ``mteb`` on a command line, e.g.
    ``["run", "-m", "/path/model", "--beir-task", "/data/cranfield", "--output-folder", "results"]``. ``--help``
    shows the o1-embedder options, then mteb's. Returns 0 on success, argparse's status for bad arguments, 2 (with a
    message on stderr) when the model, an option or a BEIR folder cannot be used; errors raised while mteb evaluates
    propagate.
    """
    argv = list(argv)
    if not argv or argv[0] not in _MODEL_COMMANDS:
        return _run_mteb_unchanged(argv)
    command, rest = argv[0], argv[1:]
    parser = _o1_parser(command)
    if any(arg in ("-h", "--help") for arg in rest):
        print(parser.format_help())
    try:
        ours, mteb_argv = parser.parse_known_args(rest)
        model = ["--model", ours.model] if ours.model is not None else []  # mteb's parser needs -m too
        args = _mteb_parser().parse_args([command, *mteb_argv, *model])
    except SystemExit as e:
        return _exit_code(e)
    with ExitStack() as stack:
        try:
            models = _models(ours, args, options_from_args(ours))
            tasks = _local_tasks(ours, args)
            _check_stale_results(args, tasks)
            stack.enter_context(registered(models, tasks))
        except (OSError, ValueError, TypeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.func(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: configure logging as the ``mteb`` command does, then :func:`run_mteb_cli`."""
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(rich_tracebacks=True)])
    return run_mteb_cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
