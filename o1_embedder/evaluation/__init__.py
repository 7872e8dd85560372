"""Retrieval evaluation: metrics, exact dense search, BM25, corpus-embedding cache, reports."""

from .metrics import HEADLINE_METRICS, evaluate_run, relevant_queries
from .retrieval import (
    EmbeddingCache,
    bm25_run,
    embed_corpus,
    evaluate_bm25,
    evaluate_dense,
    exact_search,
    model_fingerprint,
    results_markdown,
    write_report,
)

__all__ = [
    "HEADLINE_METRICS",
    "EmbeddingCache",
    "bm25_run",
    "embed_corpus",
    "evaluate_bm25",
    "evaluate_dense",
    "evaluate_run",
    "exact_search",
    "model_fingerprint",
    "relevant_queries",
    "results_markdown",
    "write_report",
]
