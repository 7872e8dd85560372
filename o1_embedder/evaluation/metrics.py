"""Retrieval metrics (nDCG@k, MRR@k, Recall@k) computed with ``pytrec_eval`` (trec_eval).

Conventions, stated once:

- A *run* maps a query id to ``{document id: score}``; higher scores rank first. As in trec_eval, ties
  are broken by document id in descending string order.
- The mean is taken over the queries in ``qrels`` that have at least one relevant judgment (grade > 0).
  Such a query missing from the run (or with an empty ranking) counts as 0 for every metric. Queries
  that appear only in the run are ignored.
- nDCG uses the graded judgments as gains (trec_eval's ``ndcg_cut``). MRR@k is the reciprocal rank of
  the first relevant document within the top k (0 if none); Recall@k is the fraction of the relevant
  documents found in the top k. "Relevant" means grade >= 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytrec_eval

__all__ = ["HEADLINE_METRICS", "evaluate_run", "query_ndcg", "relevant_queries"]

#: The metrics every report shows, in order.
HEADLINE_METRICS = ("ndcg@10", "mrr@10", "recall@100")


def relevant_queries(qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Ids of the queries with at least one relevant (grade > 0) judgment: the queries metrics average over."""
    return [qid for qid, judgments in qrels.items() if any(int(g) > 0 for g in judgments.values())]


def _top(ranking: Mapping[str, float], k: int) -> dict[str, float]:
    """The first ``k`` documents of a ranking in trec_eval order (score descending, then doc id descending)."""
    ordered = sorted(ranking.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return dict(ordered[:k])


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
                 k_values: Sequence[int] = (10, 100)) -> dict[str, float]:
    """Mean nDCG@k, MRR@k and Recall@k for every ``k`` in ``k_values``.

    Keys are ``"ndcg@{k}"``, ``"mrr@{k}"``, ``"recall@{k}"``; with the default ``k_values`` they include
    the headline ``ndcg@10``, ``mrr@10`` and ``recall@100``. See the module docstring for how queries
    are averaged (missing queries count as 0).
    """
    ks = sorted({int(k) for k in k_values})
    if not ks or ks[0] < 1:
        raise ValueError(f"k_values must be positive integers, got {list(k_values)}")
    judged = relevant_queries(qrels)
    if not judged:
        raise ValueError("qrels has no query with a relevant judgment (grade > 0); nothing to evaluate")

    clean_qrels = {qid: {str(doc): int(grade) for doc, grade in qrels[qid].items()} for qid in judged}
    clean_run: dict[str, dict[str, float]] = {}
    for qid in judged:
        ranking = run.get(qid) or {}
        clean_run[qid] = {str(doc): float(score) for doc, score in ranking.items()}

    totals = {f"{name}@{k}": 0.0 for k in ks for name in ("ndcg", "mrr", "recall")}
    measures = {f"ndcg_cut.{','.join(map(str, ks))}", f"recall.{','.join(map(str, ks))}"}
    present = {qid: ranking for qid, ranking in clean_run.items() if ranking}
    if present:
        per_query = pytrec_eval.RelevanceEvaluator(clean_qrels, measures).evaluate(present)
        for scores in per_query.values():
            for k in ks:
                totals[f"ndcg@{k}"] += scores[f"ndcg_cut_{k}"]
                totals[f"recall@{k}"] += scores[f"recall_{k}"]
        # trec_eval's recip_rank has no cutoff: evaluate it on each ranking cut at k.
        mrr_evaluator = pytrec_eval.RelevanceEvaluator(clean_qrels, {"recip_rank"})
        for k in ks:
            cut = {qid: _top(ranking, k) for qid, ranking in present.items()}
            for scores in mrr_evaluator.evaluate(cut).values():
                totals[f"mrr@{k}"] += scores["recip_rank"]
    return {key: value / len(judged) for key, value in totals.items()}


def query_ndcg(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], k: int = 10
               ) -> dict[str, float]:
    """nDCG@k of every query with a relevant judgment (0 for a query missing from the run): the per-query
    scores that :func:`evaluate_run` averages, for paired significance tests."""
    judged = relevant_queries(qrels)
    clean_qrels = {qid: {str(doc): int(grade) for doc, grade in qrels[qid].items()} for qid in judged}
    present = {qid: {str(d): float(s) for d, s in run[qid].items()} for qid in judged if run.get(qid)}
    scores = dict.fromkeys(judged, 0.0)
    if present:
        evaluated = pytrec_eval.RelevanceEvaluator(clean_qrels, {f"ndcg_cut.{k}"}).evaluate(present)
        for qid, values in evaluated.items():
            scores[qid] = values[f"ndcg_cut_{k}"]
    return scores
