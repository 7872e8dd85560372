"""Thought generation and the persistent thought cache."""

from o1_embedder.thinking.cache import CachedThought, ThoughtCache

__all__ = ["CachedThought", "ThoughtCache"]
