"""Metrics against values computed by hand (trec_eval conventions: linear gains, log2(rank + 1) discount)."""

from __future__ import annotations

from math import log2

import pytest

from o1_embedder.evaluation import evaluate_run, relevant_queries

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d4": 1, "d3": 0},  # relevant: d1 (grade 2), d2, d4; d3 judged non-relevant
    "q2": {"d2": 1},
    "q3": {"d4": 3},                              # missing from the run: counts as 0
    "q4": {"d1": 0},                              # no relevant document: not averaged
}
RUN = {
    "q1": {"d3": 0.9, "d1": 0.8, "d5": 0.7, "d2": 0.6},  # ranks: d3 (0), d1 (2), d5 (unjudged), d2 (1)
    "q2": {"d1": 0.9, "d4": 0.8, "d2": 0.5},             # d2 (relevant) at rank 3
    "q5": {"d1": 1.0},                                   # not in qrels: ignored
}


def test_toy_run_matches_hand_computation():
    metrics = evaluate_run(QRELS, RUN)
    # q1: DCG@10 = 0/log2(2) + 2/log2(3) + 0/log2(4) + 1/log2(5)
    #     IDCG@10 = 2/log2(2) + 1/log2(3) + 1/log2(4)   (ideal grades 2, 1, 1)
    ndcg_q1 = (2 / log2(3) + 1 / log2(5)) / (2 + 1 / log2(3) + 1 / log2(4))  # = 0.5406
    # q2: DCG = 1/log2(4) = 0.5, IDCG = 1 -> 0.5
    ndcg_q2 = 0.5
    # q3 missing -> 0; q4 has no relevant document -> not in the mean (3 queries averaged)
    assert metrics["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3, abs=1e-4)
    # first relevant: q1 rank 2 -> 1/2; q2 rank 3 -> 1/3; q3 -> 0
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3, abs=1e-6)
    # q1 finds d1, d2 of {d1, d2, d4} -> 2/3; q2 finds d2 -> 1; q3 -> 0
    assert metrics["recall@100"] == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-6)
    # recall@10 equals recall@100 here (all rankings are shorter than 10)
    assert metrics["recall@10"] == pytest.approx(metrics["recall@100"])
    assert {"ndcg@10", "mrr@10", "recall@100"} <= set(metrics)


def test_mrr_is_cut_at_k():
    qrels = {"q": {"d10": 1}}
    run = {"q": {f"d{i:02d}": 1.0 - i / 100 for i in range(20)}}  # d10 is ranked 11th
    metrics = evaluate_run(qrels, run)
    assert metrics["mrr@10"] == 0.0
    assert metrics["mrr@100"] == pytest.approx(1 / 11)
    assert metrics["recall@10"] == 0.0 and metrics["recall@100"] == 1.0


def test_ties_follow_trec_eval_order_for_every_metric():
    # Equal scores: trec_eval ranks by document id descending, so "b" comes before "a".
    metrics = evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0, "b": 1.0}}, k_values=(1,))
    assert metrics == {"ndcg@1": 0.0, "mrr@1": 0.0, "recall@1": 0.0}


def test_empty_run_scores_zero_and_bad_input_is_refused():
    assert evaluate_run(QRELS, {}) == {key: 0.0 for key in evaluate_run(QRELS, RUN)}
    assert relevant_queries(QRELS) == ["q1", "q2", "q3"]
    with pytest.raises(ValueError, match="no query with a relevant judgment"):
        evaluate_run({"q": {"d": 0}}, {"q": {"d": 1.0}})
    with pytest.raises(ValueError, match="k_values"):
        evaluate_run(QRELS, RUN, k_values=(0,))
