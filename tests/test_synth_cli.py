"""End to end: a BEIR folder (a slice of the shipped Cranfield copy) to a training file, with the CLI, offline."""

from __future__ import annotations

import json

import pytest
from synth_helpers import FakeOpenAIServer, one_thread  # noqa: F401  (fixture)

from o1_embedder.cli import main
from o1_embedder.data.records import RecordFile, Stage

pytestmark = pytest.mark.usefixtures("one_thread")


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("chain") / "mined.jsonl"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["mine", "cranfield", "-o", str(out), "--max-queries", "3", "--max-docs", "25",
                     "--num-negatives", "4", "--seed", "1"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


def test_beir_folder_to_training_file(mined, tiny_backbone, tmp_path, capsys):
    records = read(mined)
    assert len(records) == 3 and all(len(r["neg"]) == 4 and r["pos"] for r in records)
    assert all(not set(r["neg"]) & set(r["pos"]) for r in records)

    candidates = tmp_path / "candidates.jsonl"
    synth = ["synth", str(mined), "-o", str(candidates), "--model", str(tiny_backbone), "-n", "2",
             "--max-new-tokens", "6", "--few-shot", "1", "--max-example-chars", "80", "--batch-size", "4"]
    assert main(synth) == 0
    lines = read(candidates)
    assert sorted(r["query_id"] for r in lines) == sorted(r["query_id"] for r in records)
    by_id = {r["query_id"]: r for r in records}
    for line in lines:
        assert len(line["candidates"]) == 2 and all(c.strip() for c in line["candidates"])
        assert line["pos"] == by_id[line["query_id"]]["pos"] and line["neg"] == by_id[line["query_id"]]["neg"]
        assert line["synthesis"]["generator"]["model"] == str(tiny_backbone)
    capsys.readouterr()
    assert main(synth) == 0  # resumes: nothing left to do
    printed = capsys.readouterr().out
    assert "wrote 0 records" in printed and "3 already done" in printed
    assert read(candidates) == lines

    train = tmp_path / "train.jsonl"
    assert main(["vote", str(candidates), "-o", str(train)]) == 0
    printed = capsys.readouterr().out
    assert "all-MiniLM-L6-v2" in printed and "bm25" in printed and "query alone" in printed
    voted = read(train)
    assert len(voted) == 3 and len(RecordFile(train, Stage.TRAINING)) == 3
    for record in voted:
        assert record["thought"] == record["candidates"][record["votes"]["winner"]]
        assert record["committee"] == ["all-MiniLM-L6-v2", "bm25"]
        assert set(record["votes"]["members"]) == {"all-MiniLM-L6-v2", "bm25"}

    # the trainer reads the file unchanged
    from o1_embedder.training.data import load_training_data

    dataset = load_training_data(train)
    assert len(dataset) == 3 and set(dataset["thought"]) == {r["thought"] for r in voted}
    assert all(len(n) == 4 for n in dataset["negatives"])


def test_synth_through_an_openai_compatible_server(mined, tmp_path, capsys):
    out = tmp_path / "candidates.jsonl"
    first_query = read(mined)[0]["query"]
    with FakeOpenAIServer(always_400=[first_query], max_requests=50) as server:
        code = main(["synth", str(mined), "-o", str(out), "--backend", "openai", "--base-url", server.url,
                     "--concurrency", "2", "-n", "3", "--max-retries", "1", "--few-shot", "0"])
    assert code == 1  # one record failed: reported, not written
    printed = capsys.readouterr().out
    assert "1 failed" in printed and "candidates.failures.jsonl" in printed
    lines = read(out)
    assert len(lines) == 2
    for line in lines:
        assert len(line["candidates"]) == 3
        assert all(c.startswith(f"answer to {line['query']} (seed") for c in line["candidates"])
    [failure] = read(tmp_path / "candidates.failures.jsonl")
    assert "HTTP 400" in failure["error"]


def test_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": []}\n')
    assert main(["synth", str(bad), "-o", str(tmp_path / "x.jsonl")]) == 2
    assert f"{bad}:1: field 'pos' is empty" in capsys.readouterr().err
    no_neg = tmp_path / "no_neg.jsonl"
    no_neg.write_text('{"query_id": "a", "query": "q", "pos": ["p"], "candidates": ["t"]}\n')
    assert main(["vote", str(no_neg), "-o", str(tmp_path / "t.jsonl"), "--committee", "bm25"]) == 2
    assert f"{no_neg}:1: missing field 'neg'" in capsys.readouterr().err
    assert main(["synth", "cranfield", "-o", str(tmp_path / "y.jsonl"), "--backend", "openai"]) == 2
    assert "--base-url" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["mine", "cranfield", "-o", "{out}", "--relative-margin", "1.5"], "relative_margin"),
    (["mine", "cranfield", "-o", "{out}", "--num-negatives", "0"], "num_negatives"),
    (["synth", "cranfield", "-o", "{out}", "--backend", "openai"], "--base-url"),
    (["synth", "cranfield", "-o", "{out}", "--timeout", "nan"], "timeout"),
    (["synth", "cranfield", "-o", "{out}", "-n", "0"], "num_candidates"),
    (["vote", "in.jsonl", "-o", "{out}", "--chunk-size", "0"], "chunk_size"),
])
def test_bad_settings_stop_before_any_model_or_file(argv, message, tmp_path, capsys, monkeypatch):
    import o1_embedder.model.loading as loading

    monkeypatch.setattr(loading, "load_comparison_model", lambda *a, **k: pytest.fail("a model was loaded"))
    out = tmp_path / "out.jsonl"
    assert main([a.replace("{out}", str(out)) for a in argv]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_output_is_a_required_option():
    with pytest.raises(SystemExit):
        main(["vote", "in.jsonl"])
