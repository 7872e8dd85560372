"""Settings of ``o1-embedder init``, ``convert`` and ``export``: one dataclass each, the source of their options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from o1_embedder.options import check_paths

__all__ = ["ConvertSettings", "ExportSettings", "InitSettings"]

FORCE_HELP = "replace a folder that is not an o1-embedder model folder"


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class InitSettings:
    """``o1-embedder init``: the embedded default as a model folder."""

    path: str = _opt("o1-embedder", "target folder (default: ./o1-embedder)", positional=True, nargs="?")
    force: bool = _opt(False, FORCE_HELP)

    def __post_init__(self) -> None:
        check_paths(self, "path")


@dataclass(frozen=True)
class ConvertSettings:
    """``o1-embedder convert``: a released O1 Embedder checkpoint (merged causal LM) as a model folder; the
    thoughts' generation settings are :class:`~o1_embedder.generation.settings.GenerationSettings` options."""

    source: str = _opt(None, "checkpoint folder or hub id", positional=True)
    target: str = _opt(None, "output model folder", positional=True)
    allow_missing_tokens: bool = _opt(False, "add missing special tokens (untrained) instead of refusing")
    force: bool = _opt(False, FORCE_HELP)
    dtype: str = _opt("float32", "precision of the saved weights, used again at load (the reference runs float16 "
                                 "on GPUs)", choices=("float32", "float16", "bfloat16"))
    max_query_tokens: int | None = _opt(None, "query truncation (default: as the reference, a prompt of up to 256 "
                                              "tokens)")
    max_document_tokens: int = _opt(512, "document truncation")
    num_thoughts: int = _opt(3, "thoughts per query K (embeddings averaged)")

    def __post_init__(self) -> None:
        check_paths(self, "source", "target")
        for name in ("max_query_tokens", "max_document_tokens", "num_thoughts"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class ExportSettings:
    """``o1-embedder export``: a training checkpoint as a model folder."""

    checkpoint: str = _opt(None, "checkpoint folder written by 'o1-embedder train --save-steps N'", positional=True)
    output: str = _opt(None, "model folder to write", positional=True)
    force: bool = _opt(False, FORCE_HELP)

    def __post_init__(self) -> None:
        check_paths(self, "checkpoint", "output")
