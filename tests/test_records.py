"""Record files: validation naming file, line and field; ids; kill-safe resumable writing."""

from __future__ import annotations

import json

import pytest

from o1_embedder.data import cranfield_path
from o1_embedder.data.beir import load_beir
from o1_embedder.data.records import (
    JsonlWriter,
    RecordFile,
    RecordFormatError,
    Stage,
    content_id,
    failures_path,
    records_from_beir,
    resolve_source,
    validate_record,
    write_records_atomic,
)

GOOD = {"query_id": "a", "query": "wing lift", "pos": ["lift of a wing"], "neg": ["heat"]}


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_every_problem_is_reported_with_file_line_and_field(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [
        GOOD,
        {"query_id": "b", "query": "q", "pos": []},
        {"query_id": "c", "query": 3, "pos": ["p"]},
        "{not json",
        {"query_id": "a", "query": "again", "pos": ["p"]},
        {"query_id": "d", "query": "q", "pos": ["p", ""], "neg": "x"},
        {"query_id": "e", "query": "q", "pos": ["p"], "thought": ""},
        {"query_id": "f", "query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": [1, 2]},
        ["a list"],
        "[" * 100_000,
        '{"query_id": "g", "query": "q", "pos": ["p"], "n": ' + "1" * 5000 + "}",
    ])
    with pytest.raises(RecordFormatError) as info:
        RecordFile(path)
    message = str(info.value)
    expected = [
        f"{path}:2: field 'pos' is empty",
        f"{path}:3: field 'query' must be a string, got int",
        f"{path}:4: malformed JSON",
        f"{path}:5: duplicate query_id 'a' (first seen on line 1)",
        f"{path}:6: field 'pos'[1] is an empty string",
        f"{path}:6: field 'neg' must be a list of strings, got str",
        f"{path}:7: field 'thought' is empty",
        f"{path}:8: field 'neg_scores' has 2 scores for 1 passages in 'neg'",
        f"{path}:9: expected a JSON object, got list",
        f"{path}:10: malformed JSON (RecursionError",
        f"{path}:11: malformed JSON (ValueError",
    ]
    for line in expected:
        assert line in message
    assert info.value.total == len(expected)


def test_stages_require_their_fields(tmp_path):
    assert validate_record(GOOD, Stage.MINED) == []
    assert validate_record({**GOOD, "neg": []}, Stage.MINED) == [
        "field 'neg' is empty (needs at least one string) (run 'o1-embedder mine' to add hard negatives)"]
    assert validate_record(GOOD, Stage.CANDIDATES) == ["missing field 'candidates'"]
    assert validate_record({**GOOD, "candidates": ["t", " "]}, Stage.CANDIDATES) == [
        "field 'candidates'[1] is an empty string"]
    assert validate_record(GOOD, Stage.TRAINING) == ["missing field 'thought'"]
    assert validate_record({**GOOD, "thought": "t"}, Stage.TRAINING) == []
    path = write_lines(tmp_path / "r.jsonl", [GOOD, {"query": "no negatives", "pos": ["p"]}])
    assert len(RecordFile(path)) == 2
    with pytest.raises(RecordFormatError, match=r"r.jsonl:2: missing field 'neg'"):
        RecordFile(path, Stage.MINED)


def test_records_without_ids_get_stable_content_ids(tmp_path):
    record = {"query": "wing lift", "pos": ["lift of a wing"]}
    path = write_lines(tmp_path / "ref.jsonl", [record, {"query": "wing lift", "pos": ["other"]}])
    first, second = list(RecordFile(path))
    assert first["query_id"] == content_id("wing lift", ["lift of a wing"]) == list(RecordFile(path))[0]["query_id"]
    assert first["query_id"].startswith("h") and len(first["query_id"]) == 17
    assert second["query_id"] != first["query_id"]
    dup = write_lines(tmp_path / "dup.jsonl", [record, record])
    with pytest.raises(RecordFormatError, match="duplicate query_id"):
        RecordFile(dup)


def test_writer_appends_whole_lines_and_resumes(tmp_path):
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:
        writer.write({"query_id": "a", "text": "é"})
        writer.write({"query_id": "b"})
    assert out.read_text(encoding="utf-8") == '{"query_id": "a", "text": "é"}\n{"query_id": "b"}\n'
    with JsonlWriter(out) as writer:
        assert writer.done == {"a", "b"} and writer.existing == [{"query_id": "a", "text": "é"}]
        writer.write({"query_id": "c"})
    assert len(out.read_text().splitlines()) == 3
    with JsonlWriter(out, overwrite=True) as writer:
        assert writer.done == set()
    assert out.read_text() == ""


def test_writer_drops_a_partial_last_line_left_by_a_kill(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"query_id": "a"}\n{"query_id": "b"}\n{"query_id": "c", "candid')
    with JsonlWriter(out) as writer:
        assert writer.done == {"a", "b"} and writer.dropped_partial == len(b'{"query_id": "c", "candid')
        writer.write({"query_id": "c"})
    assert [json.loads(line)["query_id"] for line in out.read_text().splitlines()] == ["a", "b", "c"]


def test_writer_refuses_a_file_with_a_bad_complete_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"query_id": "a"}\nnot json\n{"no_id": 1}\n' + "[" * 100_000 + "\n" + "1" * 5000 + "\n")
    with pytest.raises(RecordFormatError) as info:
        JsonlWriter(out)
    for line in (2, 3, 4, 5):
        assert f"{out}:{line}:" in str(info.value)


def test_writer_never_changes_a_file_it_refuses(tmp_path):
    # someone else's file without a final newline: refused, and its last line is still there
    out = tmp_path / "queries.jsonl"
    text = '{"_id": "q1", "text": "lift"}\n{"_id": "q2", "text": "drag"}'
    out.write_text(text)
    with pytest.raises(RecordFormatError):
        JsonlWriter(out)
    assert out.read_text() == text


def test_writer_keeps_a_whole_last_record_without_its_newline(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"query_id": "a"}\n{"query_id": "b"}')
    with JsonlWriter(out) as writer:
        assert writer.done == {"a", "b"} and writer.dropped_partial == 0
        writer.write({"query_id": "c"})
    assert [json.loads(line)["query_id"] for line in out.read_text().splitlines()] == ["a", "b", "c"]


def test_atomic_write_and_failures_path(tmp_path):
    out = tmp_path / "sub" / "mined.jsonl"
    assert write_records_atomic(out, [GOOD, {**GOOD, "query_id": "b"}]) == 2
    assert len(RecordFile(out, Stage.MINED)) == 2
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    assert failures_path(out) == tmp_path / "sub" / "mined.failures.jsonl"
    assert failures_path(tmp_path / "x.out") == tmp_path / "x.out.failures.jsonl"


def test_records_from_the_shipped_cranfield_copy():
    dataset = load_beir(cranfield_path())
    records = records_from_beir(dataset)
    assert len(records) == len(dataset.judged_queries()) == 225
    first = records[0]
    assert first["query_id"] == "1" and first["query"].startswith("what similarity laws")
    grades = dataset.qrels["1"]
    assert len(first["pos"]) == len({d for d, g in grades.items() if g >= 1})
    best = min((d for d in grades), key=lambda d: (-grades[d], list(dataset.corpus).index(d)))
    assert first["pos"][0].startswith(dataset.corpus[best]["title"].strip())
    assert all(validate_record(r) == [] for r in records)
    assert len(records_from_beir(dataset, min_grade=4)) < 225


def test_resolve_source_reads_beir_folders_and_files(tmp_path):
    records, dataset = resolve_source("cranfield", max_queries=3, max_docs=50, seed=1)
    assert len(records) == 3 and len(dataset.corpus) == 50
    with pytest.raises(ValueError, match="run 'o1-embedder mine' first"):
        resolve_source("cranfield", Stage.MINED)
    path = write_lines(tmp_path / "r.jsonl", [GOOD])
    records, dataset = resolve_source(path, Stage.MINED)
    assert dataset is None and list(records)[0]["query_id"] == "a"
    with pytest.raises(FileNotFoundError):
        resolve_source(tmp_path / "missing.jsonl")
