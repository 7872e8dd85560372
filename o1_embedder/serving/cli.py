"""``o1-embedder serve MODEL``: one option per :class:`ServeSettings` field, generated from the dataclass.

Only this module, :mod:`o1_embedder.serving.settings` and :mod:`o1_embedder.options` are imported to build the
parser, so ``o1-embedder --help`` works without FastAPI and uvicorn installed.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import fields
from typing import Any

from o1_embedder.options import HelpFormatter, add_dataclass_options, dataclass_from_args
from o1_embedder.serving.settings import ServeCommand, ServeSettings

__all__ = ["add_serve_command", "settings_from_args"]


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to an ``add_subparsers()`` object: ``MODEL`` plus one option per settings field."""
    parser = subparsers.add_parser(
        "serve", help="HTTP server with the OpenAI embeddings API; batches concurrent requests together",
        description="Serve a model over HTTP with the OpenAI embeddings API (POST /v1/embeddings, GET /v1/models, "
                    "GET /health). Requests say input_type 'query' (thinks) or 'document'.",
        formatter_class=HelpFormatter)
    overrides = {f.name: {"choices": f.metadata["choices"]} for f in fields(ServeCommand) if "choices" in f.metadata}
    add_dataclass_options(parser, ServeCommand, overrides=overrides)
    parser.set_defaults(func=_cmd_serve)
    return parser


def settings_from_args(args: argparse.Namespace, cls: type[ServeSettings] = ServeSettings) -> ServeSettings:
    """Settings (``cls``) from parsed options; an option with an ``env`` variable takes it when not given."""
    # A variable that is set counts even when empty: an empty key is refused as --api-key "" is, never read as
    # "no authentication".
    from_env = {f.name: os.environ[f.metadata["env"]] for f in fields(ServeSettings)
                if f.metadata.get("env") and getattr(args, f.name, None) is None and f.metadata["env"] in os.environ}
    return dataclass_from_args(cls, args, **from_env)


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, ServeCommand)
    assert isinstance(settings, ServeCommand)
    try:
        from o1_embedder.serving.server import load_for_serving, serve
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"'o1-embedder serve' needs {err.name}: pip install 'o1-embedder[serve]'") from err
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    model, name = load_for_serving(settings.model, settings)
    serve(model, settings, name)
    return 0
