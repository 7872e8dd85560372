"""Thought generation backends (transformers, OpenAI-compatible server, vLLM) and the persistent thought cache."""

from o1_embedder.thinking.backends import (Generation, GenerationBackend, GenerationRequest, SamplingConfig,
                                           make_backend)
from o1_embedder.thinking.cache import CachedThought, ThoughtCache

__all__ = ["CachedThought", "Generation", "GenerationBackend", "GenerationRequest", "SamplingConfig", "ThoughtCache",
           "make_backend"]
