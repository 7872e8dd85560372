"""BEIR loading: the shipped Cranfield copy, subsetting, and every validation error with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from o1_embedder.data import BeirFormatError, cranfield_path, document_text, load_beir, load_cranfield


@pytest.fixture(scope="module")
def cranfield():
    return load_cranfield()


def write_beir(root: Path, corpus_lines: list[str] | None = None, query_lines: list[str] | None = None,
               qrels_lines: list[str] | None = None, split: str = "test") -> Path:
    """A small BEIR folder; each argument replaces a file's lines (given verbatim, joined by newlines)."""
    if corpus_lines is None:
        corpus_lines = [json.dumps({"_id": "d1", "title": "Wings", "text": "lift of a wing"}),
                        json.dumps({"_id": "d2", "text": "heat transfer"})]
    if query_lines is None:
        query_lines = [json.dumps({"_id": "q1", "text": "wing lift"}), json.dumps({"_id": "q2", "text": "heat"})]
    if qrels_lines is None:
        qrels_lines = ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q2\td2\t1"]
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("\n".join(corpus_lines) + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text("\n".join(query_lines) + "\n", encoding="utf-8")
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(qrels_lines) + "\n", encoding="utf-8")
    return root


def problems_of(path: Path) -> BeirFormatError:
    with pytest.raises(BeirFormatError) as info:
        load_beir(path)
    return info.value


# --------------------------------------------------------------------------------------------- shipped copy
def test_shipped_cranfield_counts(cranfield):
    assert cranfield_path().is_dir()
    assert (cranfield_path() / "README.md").is_file() and (cranfield_path() / "PROVENANCE.md").is_file()
    assert len(cranfield.corpus) == 1400
    assert len(cranfield.queries) == 225
    assert sum(len(j) for j in cranfield.qrels.values()) == 1612
    assert len(cranfield.qrels) == 225
    assert cranfield.name == "cranfield" and cranfield.split == "test"
    assert set(cranfield.corpus["1"]) == {"title", "text"}
    assert {g for j in cranfield.qrels.values() for g in j.values()} == {1, 2, 3, 4}


def test_document_text_joins_like_beir():
    assert document_text({"title": "Wings", "text": "lift of a wing"}) == "Wings lift of a wing"
    assert document_text({"title": "", "text": "only text "}) == "only text"
    assert document_text({"text": "no title"}) == "no title"


def test_subset_keeps_judged_docs_and_is_deterministic(cranfield):
    small, description = cranfield.subset(max_queries=20, max_docs=200, seed=0)
    assert len(small.queries) == 20 and len(small.corpus) == 200
    assert set(small.qrels) == set(small.queries)
    judged = {d for j in small.qrels.values() for d in j}
    assert judged <= set(small.corpus)
    for qid in small.queries:  # every judgment of a kept query survives
        assert small.qrels[qid] == cranfield.qrels[qid]
    assert "20 of 225 queries" in description and "200 of 1400 documents" in description
    again, again_description = cranfield.subset(max_queries=20, max_docs=200, seed=0)
    assert list(again.corpus) == list(small.corpus) and list(again.queries) == list(small.queries)
    assert again_description == description
    other, _ = cranfield.subset(max_queries=20, max_docs=200, seed=1)
    assert list(other.queries) != list(small.queries)


def test_subset_drops_queries_without_relevant_judgments_and_refuses_too_few_docs(tmp_path):
    root = write_beir(tmp_path, query_lines=[json.dumps({"_id": q, "text": q}) for q in ("q1", "q2", "q3")])
    data = load_beir(root)
    small, description = data.subset()
    assert list(small.queries) == ["q1", "q2"]
    assert "2 of 3 queries" in description
    with pytest.raises(ValueError, match="max_docs=1 is smaller than the 2 documents"):
        data.subset(max_docs=1)


# ---------------------------------------------------------------------------------------------- errors
def test_malformed_json_names_file_and_line(tmp_path):
    corpus = [json.dumps({"_id": "d1", "text": "a"}), '{"_id": "d2", "text": ', json.dumps({"_id": "d3", "text": "c"})]
    error = problems_of(write_beir(tmp_path, corpus_lines=corpus, qrels_lines=["query-id\tcorpus-id\tscore"]))
    assert "corpus.jsonl:2: malformed JSON" in str(error)


def test_missing_and_non_string_fields_all_reported(tmp_path):
    corpus = [
        json.dumps({"_id": "d1", "text": "ok"}),
        json.dumps({"text": "no id"}),                       # line 2
        json.dumps({"_id": "d3"}),                           # line 3
        json.dumps({"_id": 4, "text": "int id"}),            # line 4
        json.dumps({"_id": "d5", "text": ["list"]}),         # line 5
        json.dumps({"_id": "d6", "title": 7, "text": "x"}),  # line 6
        json.dumps(["not", "an", "object"]),                 # line 7
    ]
    error = problems_of(write_beir(tmp_path, corpus_lines=corpus))
    message = str(error)
    assert "corpus.jsonl:2: missing field '_id'" in message
    assert "corpus.jsonl:3: missing field 'text'" in message
    assert "corpus.jsonl:4: field '_id' must be a string, got int" in message
    assert "corpus.jsonl:5: field 'text' must be a string, got list" in message
    assert "corpus.jsonl:6: field 'title' must be a string, got int" in message
    assert "corpus.jsonl:7: expected a JSON object" in message
    assert error.total == 6 and len(error.problems) == 6


def test_duplicate_query_ids(tmp_path):
    queries = [json.dumps({"_id": "q1", "text": "a"}), json.dumps({"_id": "q2", "text": "b"}),
               json.dumps({"_id": "q1", "text": "again"})]
    message = str(problems_of(write_beir(tmp_path, query_lines=queries)))
    assert "queries.jsonl:3: duplicate _id 'q1' (first seen on line 1)" in message


def test_bad_qrels_rows(tmp_path):
    qrels = [
        "query-id\tcorpus-id\tscore",
        "q1\td1\t1",
        "q1\td1",             # line 3: two columns
        "q1\td2\thigh",       # line 4: not an integer
        "q9\td1\t1",          # line 5: unknown query
        "q2\td9\t1",          # line 6: unknown document
        "q1 d2 1",            # line 7: spaces, not tabs
        "q1\td1\t2",          # line 8: duplicate pair
    ]
    error = problems_of(write_beir(tmp_path, qrels_lines=qrels))
    message = str(error)
    assert "test.tsv:3: expected 3 tab-separated columns" in message
    assert "test.tsv:4: score must be an integer, got 'high'" in message
    assert "test.tsv:5: unknown query id 'q9'" in message
    assert "test.tsv:6: unknown document id 'd9'" in message
    assert "test.tsv:7: expected 3 tab-separated columns" in message
    assert "test.tsv:8: duplicate judgment" in message
    assert error.total == 6


def test_qrels_header_is_checked(tmp_path):
    message = str(problems_of(write_beir(tmp_path, qrels_lines=["q1\td1\t1"])))
    assert "test.tsv:1: expected the header" in message


def test_problem_list_is_capped_but_counted(tmp_path):
    corpus = [json.dumps({"_id": f"d{i}"}) for i in range(30)]
    error = problems_of(write_beir(tmp_path, corpus_lines=corpus, qrels_lines=["query-id\tcorpus-id\tscore"]))
    assert error.total == 30 and len(error.problems) == 20
    assert "corpus.jsonl:20: missing field 'text'" in str(error)
    assert "... and 10 more" in str(error)


def test_missing_files_and_splits(tmp_path):
    root = write_beir(tmp_path)
    with pytest.raises(FileNotFoundError, match="available splits: test"):
        load_beir(root, split="dev")
    (root / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="queries.jsonl is missing"):
        load_beir(root)


def test_small_folder_loads(tmp_path):
    data = load_beir(write_beir(tmp_path), name="toy")
    assert data.corpus == {"d1": {"title": "Wings", "text": "lift of a wing"},
                           "d2": {"title": "", "text": "heat transfer"}}
    assert data.queries == {"q1": "wing lift", "q2": "heat"}
    assert data.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1}}
    assert data.name == "toy"


def test_ids_match_whatever_whitespace_surrounds_them(tmp_path):
    # qrels columns are stripped; ids in the JSON files are stripped the same way, so "d1 " matches "d1 "
    data = load_beir(write_beir(tmp_path, corpus_lines=[json.dumps({"_id": "d1 ", "text": "lift"}),
                                                        json.dumps({"_id": "d2", "text": "heat"})],
                                query_lines=[json.dumps({"_id": " q1", "text": "wing lift"})],
                                qrels_lines=["query-id\tcorpus-id\tscore", "q1 \td1 \t1"]))
    assert set(data.corpus) == {"d1", "d2"} and data.queries == {"q1": "wing lift"} and data.qrels == {"q1": {"d1": 1}}
    with pytest.raises(BeirFormatError, match="duplicate _id 'd1'"):
        load_beir(write_beir(tmp_path / "dup", corpus_lines=[json.dumps({"_id": "d1", "text": "a"}),
                                                             json.dumps({"_id": " d1", "text": "b"})]))
