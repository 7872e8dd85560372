"""o1-embedder: think-then-embed retrieval for Sentence-Transformers and MTEB."""

from o1_embedder.model import (GenerationSettings, O1Embedder, PromptFormat, build_model, default_model, load_model,
                               materialize_default, save_model, wrap)
from o1_embedder.thinking import ThoughtCache

__version__ = "0.1.0"

__all__ = [
    "GenerationSettings", "O1Embedder", "PromptFormat", "ThoughtCache", "build_model", "default_model", "load_model",
    "materialize_default", "save_model", "wrap", "__version__",
]
