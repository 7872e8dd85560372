"""The `o1-embedder eval` job and the other commands, on a tiny model and a small Cranfield subset."""

import json

import pytest

from o1_embedder import save_model
from o1_embedder.cli import main


@pytest.fixture()
def saved_tiny(tiny_model, tmp_path):
    tiny_model[0].configure(num_thoughts=1, do_sample=False, max_new_tokens=4)
    return str(save_model(tiny_model, tmp_path / "tiny"))


def test_eval_command_writes_the_comparison(saved_tiny, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["eval", "cranfield", "--model", saved_tiny, "--max-queries", "4", "--max-docs", "60",
                 "--max-document-tokens", "32", "--cache-dir", str(tmp_path / "emb"), "--output", str(out)])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["o1-embedder (think)", "o1-embedder (no think)", "BM25", "all-MiniLM-L6-v2"]
    think, no_think = report["results"][:2]
    assert think["query_stats"]["thoughts_generated"] == 4 and think["generated_tokens_per_query"] > 0
    assert no_think["query_stats"]["generate_calls"] == 0
    assert no_think["corpus_cache_hit"] is True  # the corpus is embedded once for both query settings
    for r in report["results"]:
        assert r["num_queries"] == 4 and r["num_docs"] == 60
        assert 0.0 <= r["metrics"]["ndcg@10"] <= 1.0
    minilm = report["results"][3]["metrics"]["ndcg@10"]
    assert minilm > 0.2  # a real pretrained model finds relevant aeronautics abstracts
    assert (out / "results.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    assert "| BM25 |" in table and "o1-embedder (think)" in table
    printed = capsys.readouterr().out
    assert "4 of 225 queries" in printed and "60 of 1400 documents" in printed


def test_eval_reports_bad_dataset(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1"\n')
    (tmp_path / "bad" / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n')
    (tmp_path / "bad" / "qrels").mkdir()
    (tmp_path / "bad" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    code = main(["eval", str(tmp_path / "bad"), "--no-bm25", "--compare"])
    assert code == 2
    assert "corpus.jsonl:2" in capsys.readouterr().err


def test_think_command_prints_thoughts(saved_tiny, capsys):
    assert main(["think", "what is a boundary layer", "--model", saved_tiny, "--max-new-tokens", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["query"] == "what is a boundary layer" and len(line["thoughts"]) == 1


def test_convert_keeps_trained_special_tokens(saved_tiny, tmp_path):
    from o1_embedder import load_model

    # A "released checkpoint": a plain causal LM folder whose tokenizer already has the four tokens.
    src = load_model(saved_tiny)
    lm_dir = tmp_path / "released"
    src[0].model.save_pretrained(lm_dir)
    src[0].tokenizer.save_pretrained(lm_dir)
    emb_row = src[0].model.get_input_embeddings().weight[src[0].builder.emb_id].detach().clone()
    assert main(["convert", str(lm_dir), str(tmp_path / "converted")]) == 0
    converted = load_model(str(tmp_path / "converted"))
    assert (converted[0].model.get_input_embeddings().weight[converted[0].builder.emb_id] == emb_row).all()


def test_convert_refuses_plain_backbone(tiny_backbone, tmp_path, capsys):
    assert main(["convert", str(tiny_backbone), str(tmp_path / "x")]) == 2
    assert "lacks the special token" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_eval_dtype_runs_the_models_in_that_type(saved_tiny, tmp_path):
    from o1_embedder.evaluation.job import EvalSettings, run_eval

    with pytest.raises(ValueError, match="floating-point"):
        EvalSettings(dtype="int8")
    common = dict(model=saved_tiny, compare=[], bm25=False, max_queries=3, max_docs=30, max_document_tokens=16,
                  cache_dir=str(tmp_path / "emb"))
    runs = {dtype: run_eval("cranfield", tmp_path / str(dtype), EvalSettings(dtype=dtype, **common),
                            log=lambda *a: None) for dtype in ("bfloat16", None)}
    assert [r["dtype"] for r in runs["bfloat16"]["results"]] == ["bfloat16", "bfloat16"]
    assert [r["dtype"] for r in runs[None]["results"]] == ["float32", "float32"]
    assert runs[None]["results"][0]["corpus_cache_hit"] is False  # the bfloat16 corpus is cached apart


def test_hybrid_rows_fuse_each_o1_row_with_bm25(saved_tiny, tmp_path):
    out = tmp_path / "report"
    code = main(["eval", "cranfield", "--model", saved_tiny, "--max-queries", "6", "--max-docs", "60",
                 "--max-document-tokens", "32", "--cache-dir", str(tmp_path / "emb"), "--output", str(out),
                 "--compare", "--hybrid"])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == ["o1-embedder (think)", "o1-embedder (no think)", "BM25", "o1-embedder (think) + BM25",
                          "o1-embedder (no think) + BM25"]
    fused = rows["o1-embedder (think) + BM25"]
    assert fused["parts"] == ["o1-embedder (think)", "BM25"] and fused["fusion"] == "minmax"
    tests = {(c["a"], c["b"]) for c in report["comparisons"]}
    assert {("o1-embedder (think) + BM25", "o1-embedder (think)"), ("o1-embedder (think) + BM25", "BM25")} <= tests
    assert main(["eval", "cranfield", "--model", saved_tiny, "--no-bm25", "--hybrid"]) == 2


def test_fuse_runs_by_hand():
    from o1_embedder.evaluation.fusion import fuse_runs, fuse_scores

    dense = {"q": {"a": 0.9, "b": 0.5, "c": 0.1}}
    lexical = {"q": {"c": 12.0, "d": 8.0, "a": 2.0}}
    # min-max: a = 1 + 0, b = 0.5 + 0 (missing), c = 0 + 1, d = 0 + 0.6
    assert fuse_runs([dense, lexical])["q"] == pytest.approx({"a": 1.0, "c": 1.0, "d": 0.6, "b": 0.5})
    assert list(fuse_runs([dense, lexical])["q"]) == ["a", "c", "d", "b"]  # ties broken by document id
    rrf = fuse_runs([dense, lexical], method="rrf", k=0)
    assert rrf["q"] == pytest.approx({"a": 1 + 1 / 3, "c": 1 / 3 + 1, "b": 1 / 2, "d": 1 / 2})
    assert fuse_runs([dense, lexical], weights=[1.0, 0.0])["q"]["a"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        fuse_runs([dense], method="max")
    with pytest.raises(ValueError, match="2 weights for 1 runs"):
        fuse_runs([dense], weights=[1, 1])
    z = fuse_scores([[[1.0, 2.0, 3.0]], [[5.0, 5.0, 5.0]]])
    assert z[0].tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
