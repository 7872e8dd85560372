"""Paired significance tests over queries: is one system's nDCG@10 better than another's, or noise?

Both systems are scored on the same queries, so the test is paired: for each query the difference of
the two per-query scores. :func:`paired_test` reports the mean difference, a two-sided p-value from a
paired randomisation (sign-flip) test, and a bootstrap 95% confidence interval of the mean difference;
both resample with a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["paired_comparisons", "paired_test"]

METRIC = "ndcg@10"


def paired_test(a: Mapping[str, float], b: Mapping[str, float], *, samples: int = 10_000, seed: int = 0
                ) -> dict[str, float]:
    """Compare per-query scores ``a`` and ``b`` (``{query id: score}``) on the queries both have.

    Returns ``n``, ``mean_a``, ``mean_b``, ``difference`` (mean of a - b), ``p_value`` (two-sided, paired
    randomisation test with ``samples`` sign flips; the observed assignment counts as one of them, so it
    is never 0) and ``ci_low`` / ``ci_high`` (bootstrap 95% interval of the mean difference).
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two systems share no query")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    x = np.array([a[q] for q in common], dtype=np.float64)
    y = np.array([b[q] for q in common], dtype=np.float64)
    diff = x - y
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(samples, len(diff)))
    flipped = np.abs((signs * diff).mean(axis=1))
    p_value = (1 + int((flipped >= observed - 1e-12).sum())) / (samples + 1)
    boot = rng.integers(0, len(diff), size=(samples, len(diff)))
    means = diff[boot].mean(axis=1)
    return {"n": len(common), "mean_a": float(x.mean()), "mean_b": float(y.mean()), "difference": float(diff.mean()),
            "p_value": float(p_value), "ci_low": float(np.percentile(means, 2.5)),
            "ci_high": float(np.percentile(means, 97.5))}


def paired_comparisons(results: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]], *,
                       metric: str = METRIC, samples: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """:func:`paired_test` for each ``(name a, name b)`` of ``pairs`` whose two results are present and carry
    per-query ``metric`` scores; pairs with a missing system are left out."""
    by_name = {r.get("name"): r for r in results}
    out = []
    for name_a, name_b in pairs:
        ra, rb = by_name.get(name_a), by_name.get(name_b)
        if ra is None or rb is None:
            continue
        qa, qb = ra.get("per_query", {}).get(metric), rb.get("per_query", {}).get(metric)
        if not qa or not qb:
            continue
        out.append({"a": name_a, "b": name_b, "metric": metric, **paired_test(qa, qb, samples=samples, seed=seed)})
    return out
