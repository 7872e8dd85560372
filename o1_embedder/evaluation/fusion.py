"""Hybrid retrieval: dense and lexical rankings fused into one.

Two fusions, over runs (``{query id: {document id: score}}``, each a ranked list such as a top 100):

* ``"minmax"`` (default, the normalised score sum): each run's scores are scaled to [0, 1] per query (min-max
  over that query's list), a document missing from a run gets 0 there, and the (weighted) sum ranks;
* ``"rrf"`` (reciprocal-rank fusion, Cormack et al. 2009): the sum of ``weight / (k + rank)``.

Both need nothing but the runs, so any two retrievers fuse: o1-embedder (thinking or not) and BM25, two dense
models, ... :func:`fuse_scores` does the same for two full score matrices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["FUSIONS", "fuse_runs", "fuse_scores"]

FUSIONS = ("minmax", "rrf")

Run = Mapping[str, Mapping[str, float]]


def _weights(count: int, weights: Sequence[float] | None) -> list[float]:
    weights = [1.0] * count if weights is None else [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} runs")
    if any(not np.isfinite(w) or w < 0 for w in weights) or not any(weights):
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights}")
    return weights


def fuse_runs(runs: Sequence[Run], *, method: str = "minmax", weights: Sequence[float] | None = None,
              k: int = 60, top_k: int = 100) -> dict[str, dict[str, float]]:
    """One run from several (see the module docstring); every query of any run is kept, its ``top_k`` documents."""
    if method not in FUSIONS:
        raise ValueError(f"method must be one of {', '.join(FUSIONS)}, got {method!r}")
    if len(runs) < 1:
        raise ValueError("fuse_runs needs at least one run")
    if k < 0 or top_k < 1:
        raise ValueError(f"k must be >= 0 and top_k >= 1, got k={k}, top_k={top_k}")
    weights = _weights(len(runs), weights)
    fused: dict[str, dict[str, float]] = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        total: dict[str, float] = {}
        for run, weight in zip(runs, weights):
            ranking = run.get(qid) or {}
            if not ranking:
                continue
            if method == "rrf":
                ordered = sorted(ranking.items(), key=lambda item: (-item[1], item[0]))
                parts = {doc: weight / (k + rank) for rank, (doc, _) in enumerate(ordered, start=1)}
            else:
                values = np.fromiter(ranking.values(), dtype=np.float64)
                low, span = values.min(), values.max() - values.min()
                parts = {doc: weight * ((score - low) / span if span > 0 else 1.0) for doc, score in ranking.items()}
            for doc, value in parts.items():
                total[doc] = total.get(doc, 0.0) + value
        best = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:top_k]
        fused[qid] = {doc: float(score) for doc, score in best}
    return fused


def fuse_scores(scores: Sequence[np.ndarray], *, weights: Sequence[float] | None = None) -> np.ndarray:
    """The normalised score sum of full ``(queries, documents)`` score matrices: each row standardised (z-scores),
    then the weighted sum. A row with one value everywhere contributes 0."""
    if not scores:
        raise ValueError("fuse_scores needs at least one matrix")
    shapes = {np.shape(s) for s in scores}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"score matrices must all have one 2-d shape, got {sorted(shapes)}")
    weights = _weights(len(scores), weights)
    total = np.zeros(next(iter(shapes)), dtype=np.float64)
    for matrix, weight in zip(scores, weights):
        matrix = np.asarray(matrix, dtype=np.float64)
        std = matrix.std(axis=1, keepdims=True)
        total += weight * np.where(std > 0, (matrix - matrix.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1),
                                   0.0)
    return total
