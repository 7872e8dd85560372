"""o1-embedder: think-then-embed retrieval for Sentence-Transformers and MTEB.

Public names are imported lazily, so ``o1_embedder.data`` and the command line start fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GenerationSettings": "o1_embedder.model.encoding",
    "O1Embedder": "o1_embedder.model.module",
    "PromptFormat": "o1_embedder.model.formats",
    "build_model": "o1_embedder.model.loading",
    "convert_checkpoint": "o1_embedder.model.loading",
    "default_model": "o1_embedder.model.loading",
    "load_model": "o1_embedder.model.loading",
    "materialize_default": "o1_embedder.model.loading",
    "save_model": "o1_embedder.model.loading",
    "wrap": "o1_embedder.model.loading",
    "ThoughtCache": "o1_embedder.generation.cache",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'o1_embedder' has no attribute {name!r}")
