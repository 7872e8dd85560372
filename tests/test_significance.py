"""Paired tests over queries: a real gain is significant, noise is not, and reports list the tests."""

import json

import numpy as np
import pytest

from o1_embedder.evaluation import write_report
from o1_embedder.evaluation.significance import paired_comparisons, paired_test


def test_consistent_gain_is_significant_and_noise_is_not():
    rng = np.random.default_rng(1)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 0.8, 100))}
    better = {q: v + 0.05 + float(rng.normal(0, 0.02)) for q, v in base.items()}
    noisy = {q: v + float(rng.normal(0, 0.1)) for q, v in base.items()}
    gain = paired_test(better, base)
    assert gain["p_value"] < 0.001 and 0.04 < gain["difference"] < 0.06
    assert gain["ci_low"] > 0 and gain["n"] == 100
    noise = paired_test(noisy, base)
    assert noise["p_value"] > 0.05 and noise["ci_low"] < 0 < noise["ci_high"]
    assert paired_test(base, base)["p_value"] == 1.0
    assert paired_test(better, base) == gain  # seeded: reproducible


def test_only_common_queries_count_and_errors():
    assert paired_test({"a": 1.0, "b": 0.0}, {"a": 0.5, "c": 1.0})["n"] == 1
    with pytest.raises(ValueError, match="share no query"):
        paired_test({"a": 1.0}, {"b": 1.0})


def test_report_lists_comparisons(tmp_path):
    per_query = {f"q{i}": i / 10 for i in range(10)}
    results = [{"name": "x", "dataset": "d", "metrics": {"ndcg@10": 0.5}, "per_query": {"ndcg@10": per_query}},
               {"name": "y", "dataset": "d", "metrics": {"ndcg@10": 0.4},
                "per_query": {"ndcg@10": {q: v - 0.1 for q, v in per_query.items()}}}]
    tests = paired_comparisons(results, [("x", "y"), ("x", "missing")])
    assert len(tests) == 1 and tests[0]["a"] == "x" and abs(tests[0]["difference"] - 0.1) < 1e-9
    paths = write_report(results, tmp_path, "t", comparisons=tests)
    assert "| x vs y | +0.1000 |" in paths["md"].read_text()
    assert json.loads(paths["json"].read_text())["comparisons"][0]["b"] == "y"


def test_report_writes_trec_runs_and_mteb_style_results(tmp_path):
    import pytrec_eval

    from o1_embedder.data import load_cranfield
    from o1_embedder.evaluation.retrieval import evaluate_bm25

    data, _ = load_cranfield().subset(5, 60, seed=0)
    result = evaluate_bm25(data)
    paths = write_report([result], tmp_path, "t")
    trec = (tmp_path / "runs" / "BM25.trec").read_text().splitlines()
    run: dict = {}
    for line in trec:
        qid, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == "BM25"
        run.setdefault(qid, {})[doc] = float(score)
    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in data.qrels.items()}
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    mean = sum(s["ndcg_cut_10"] for s in scores.values()) / len(data.judged_queries())
    assert abs(mean - result["metrics"]["ndcg@10"]) < 1e-6
    mteb = json.loads(next(p for p in (tmp_path / "mteb").rglob("*.json") if p.name != "model_meta.json").read_text())
    assert mteb["scores"]["test"][0]["main_score"] == pytest.approx(result["metrics"]["ndcg@10"], abs=1e-6)
    assert "run" not in json.loads(paths["json"].read_text())["results"][0]


def test_no_unreadable_trec_file_for_ids_with_spaces(tmp_path, caplog):
    result = {"name": "x", "dataset": "d", "metrics": {"ndcg@10": 0.5}, "run": {"q 1": {"doc one": 1.0}}}
    with caplog.at_level("WARNING", logger="o1_embedder.evaluation.retrieval"):
        paths = write_report([result], tmp_path, "t")
    assert not (tmp_path / "runs").exists() and "contain spaces" in caplog.text
    assert "mteb:x" in paths and json.loads(paths["json"].read_text())["results"][0]["metrics"]["ndcg@10"] == 0.5
