"""Loading retrieval test collections in BEIR layout.

A BEIR folder holds::

    corpus.jsonl        one JSON object per line: {"_id": str, "title": str (optional), "text": str, ...}
    queries.jsonl       one JSON object per line: {"_id": str, "text": str, ...}
    qrels/{split}.tsv   tab separated, header ``query-id  corpus-id  score``, integer scores

Every file is validated completely: all problems of one file (up to :data:`MAX_PROBLEMS`) are reported
together in one :class:`BeirFormatError` whose lines read ``path:line: what is wrong``. Nothing is
dropped silently. Extra JSON fields (BEIR's ``metadata``) are allowed and ignored. Blank lines are
skipped (they hold no record).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .jsonl import MAX_PROBLEMS, FileFormatError, Problems, json_lines, text_lines

__all__ = [
    "MAX_PROBLEMS",
    "BeirDataset",
    "BeirFormatError",
    "cranfield_path",
    "document_text",
    "load_beir",
    "load_cranfield",
]

#: At most this many problems of one file are listed in an error message (the rest are counted).

QRELS_HEADER = ("query-id", "corpus-id", "score")


class BeirFormatError(FileFormatError):
    """A BEIR file is malformed. ``problems`` holds every ``path:line: message`` found (up to the limit)."""


@dataclass
class BeirDataset:
    """A retrieval collection: documents, queries and relevance judgments (qrels).

    ``corpus`` maps a document id to ``{"title": str, "text": str}`` (title ``""`` when absent);
    ``queries`` maps a query id to its text; ``qrels`` maps a query id to ``{document id: grade}``.
    Dict order is file order.
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str
    path: Path | None = None
    split: str = "test"

    def __repr__(self) -> str:
        judgments = sum(len(v) for v in self.qrels.values())
        return (f"BeirDataset(name={self.name!r}, split={self.split!r}, documents={len(self.corpus)}, "
                f"queries={len(self.queries)}, judgments={judgments})")

    def judged_queries(self) -> list[str]:
        """Ids of the queries with at least one relevant (grade > 0) judgment, in file order."""
        return [qid for qid in self.queries if any(grade > 0 for grade in self.qrels.get(qid, {}).values())]

    def subset(self, max_queries: int | None = None, max_docs: int | None = None,
               seed: int = 0) -> tuple[BeirDataset, str]:
        """A smaller copy for quick runs, and a one-line description of what was kept.

        Only queries with at least one relevant judgment (grade > 0) are kept; if ``max_queries`` is
        set, that many of them are sampled with ``seed``. If ``max_docs`` is set, the corpus keeps every
        document judged for a kept query (so no judgment is lost), then is filled up to ``max_docs``
        with other documents sampled with ``seed``. Kept items stay in file order, so the result is
        the same for the same arguments. Raises ``ValueError`` when ``max_docs`` is smaller than the
        number of judged documents of the kept queries (dropping judged documents would change scores).
        """
        if max_queries is not None and max_queries < 1:
            raise ValueError(f"max_queries must be >= 1 or None, got {max_queries}")
        if max_docs is not None and max_docs < 1:
            raise ValueError(f"max_docs must be >= 1 or None, got {max_docs}")
        rng = random.Random(seed)

        judged = self.judged_queries()
        if not judged:
            raise ValueError(f"{self.name}: no query has a relevant judgment (grade > 0); nothing to evaluate")
        query_ids = judged
        if max_queries is not None and max_queries < len(judged):
            chosen = set(rng.sample(judged, max_queries))
            query_ids = [qid for qid in judged if qid in chosen]
        queries_note = f"{len(query_ids)} of {len(self.queries)} queries"
        if len(judged) != len(self.queries):
            queries_note += f" ({len(judged)} have relevant judgments)"
        if len(query_ids) < len(judged):
            queries_note += f", sampled with seed {seed}"

        qrels = {qid: dict(self.qrels[qid]) for qid in query_ids}
        needed = {doc_id for judgments in qrels.values() for doc_id in judgments}
        doc_ids = list(self.corpus)
        docs_note = f"all {len(doc_ids)} documents"
        if max_docs is not None and max_docs < len(doc_ids):
            if len(needed) > max_docs:
                raise ValueError(
                    f"{self.name}: max_docs={max_docs} is smaller than the {len(needed)} documents judged for the "
                    f"{len(query_ids)} kept queries; raise max_docs or lower max_queries")
            others = [doc_id for doc_id in doc_ids if doc_id not in needed]
            extra = set(rng.sample(others, max_docs - len(needed)))
            doc_ids = [doc_id for doc_id in doc_ids if doc_id in needed or doc_id in extra]
            docs_note = (f"{len(doc_ids)} of {len(self.corpus)} documents (the {len(needed)} judged for kept queries "
                         f"+ {len(extra)} others sampled with seed {seed})")

        corpus = {doc_id: dict(self.corpus[doc_id]) for doc_id in doc_ids}
        judgments = sum(len(v) for v in qrels.values())
        description = f"{self.name} ({self.split}): {queries_note}; {docs_note}; {judgments} judgments"
        small = BeirDataset(corpus=corpus, queries={qid: self.queries[qid] for qid in query_ids}, qrels=qrels,
                            name=self.name, path=self.path, split=self.split)
        return small, description


def document_text(doc: dict) -> str:
    """The text a model embeds for a document, joined as BEIR does: ``"title text"``, or the text alone."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text


def cranfield_path() -> Path:
    """Folder of the Cranfield collection shipped with the package (BEIR layout, split ``test``)."""
    return Path(__file__).resolve().parent.parent / "datasets" / "cranfield"


def resolve_beir_path(name_or_path: str | os.PathLike) -> Path:
    """A BEIR folder's path; ``cranfield`` names the copy shipped with the package unless a path of that name exists."""
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path).lower() == "cranfield":
        return cranfield_path()
    return path


def load_cranfield(split: str = "test") -> BeirDataset:
    """Load the shipped Cranfield collection (1,400 documents, 225 queries, 1,612 graded judgments)."""
    return load_beir(cranfield_path(), split=split, name="cranfield")


def load_beir(path: str | Path, split: str = "test", name: str | None = None) -> BeirDataset:
    """Load and validate a BEIR folder; raise :class:`BeirFormatError` listing every problem of a file."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"BEIR folder not found: {root}")
    corpus_file, queries_file = root / "corpus.jsonl", root / "queries.jsonl"
    qrels_file = root / "qrels" / f"{split}.tsv"
    for required in (corpus_file, queries_file):
        if not required.is_file():
            raise FileNotFoundError(f"{root} is not a BEIR folder: {required.name} is missing")
    if not qrels_file.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise FileNotFoundError(f"qrels for split {split!r} not found: {qrels_file} (available splits: "
                                f"{', '.join(available) or 'none'})")

    corpus = {doc_id: {"title": record.get("title", ""), "text": record["text"]}
              for doc_id, record in _read_jsonl(corpus_file, optional_fields=("title",))}
    queries = {query_id: record["text"]
               for query_id, record in _read_jsonl(queries_file, optional_fields=(), non_empty_text=True)}
    qrels = _read_qrels(qrels_file, queries, corpus)
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, name=name or root.name, path=root, split=split)


def unencodable(text: str) -> str | None:
    """Why ``text`` cannot be written as UTF-8 (a lone surrogate from a ``\\ud800`` escape), or ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"is not valid Unicode (lone surrogate {text[err.start]!r} at character {err.start})"
    return None


#: the range of qrels grades trec_eval accepts (a C int)
GRADE_RANGE = (-(2**31), 2**31 - 1)


def _read_jsonl(path: Path, optional_fields: tuple[str, ...], non_empty_text: bool = False) -> list[tuple[str, dict]]:
    """Records of a corpus or queries file as ``(id, record)``; ``_id`` and ``text`` are required strings
    (``text`` non-empty when ``non_empty_text``: a query without text cannot be scored)."""
    problems = Problems(path, BeirFormatError)
    records: list[tuple[str, dict]] = []
    first_line: dict[str, int] = {}
    for number, record in json_lines(path, problems):
        if not isinstance(record, dict):
            problems.add(number, f"expected a JSON object, got {type(record).__name__}")
            continue
        ok = True
        for key in ("_id", "text"):
            if key not in record:
                problems.add(number, f"missing field {key!r}")
                ok = False
            elif not isinstance(record[key], str):
                problems.add(number, f"field {key!r} must be a string, got {type(record[key]).__name__}")
                ok = False
        for key in optional_fields:
            if key in record and not isinstance(record[key], str):
                problems.add(number, f"field {key!r} must be a string, got {type(record[key]).__name__}")
                ok = False
        for key in ("_id", "text", *optional_fields):
            reason = unencodable(record[key]) if isinstance(record.get(key), str) else None
            if reason:
                problems.add(number, f"field {key!r} {reason}")
                ok = False
        if non_empty_text and isinstance(record.get("text"), str) and not record["text"].strip():
            problems.add(number, "field 'text' is empty (a query without text cannot be scored)")
            ok = False
        if isinstance(record.get("_id"), str):
            record_id = record["_id"] = record["_id"].strip()  # qrels columns are stripped too: ids match
            if not record_id:
                problems.add(number, "field '_id' is empty")
                ok = False
            elif any(c in record_id for c in "\t\r\n"):
                problems.add(number, f"field '_id' {record_id!r} contains a tab or line break (qrels/test.tsv "
                                     f"is tab-separated, so the id could not be named there)")
                ok = False
            elif record_id in first_line:
                problems.add(number, f"duplicate _id {record_id!r} (first seen on line {first_line[record_id]})")
                ok = False
            else:
                first_line[record_id] = number
        if ok:
            records.append((record["_id"], record))
    problems.raise_if_any()
    return records


def _read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, dict]) -> dict[str, dict[str, int]]:
    """Judgments as ``{query id: {document id: grade}}``; every id must exist, every pair appear once."""
    problems = Problems(path, BeirFormatError)
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    header_seen = False
    for number, line in text_lines(path, problems):
        columns = line.split("\t")
        if not header_seen:
            header_seen = True
            if tuple(c.strip().lower() for c in columns) != QRELS_HEADER:
                problems.add(number, f"expected the header {chr(9).join(QRELS_HEADER)!r} (tab separated), "
                                     f"got {line[:80]!r}")
            continue
        if len(columns) != 3:
            problems.add(number, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(columns)}")
            continue
        query_id, doc_id, score_text = (c.strip() for c in columns)
        ok = True
        try:
            if not re.fullmatch(r"[+-]?[0-9]+", score_text):  # int() also takes '1_0' and other scripts' digits
                raise ValueError(score_text)
            score = int(score_text)
            if not GRADE_RANGE[0] <= score <= GRADE_RANGE[1]:
                problems.add(number, f"score {score} is out of range (trec_eval takes {GRADE_RANGE[0]} to "
                                     f"{GRADE_RANGE[1]})")
                ok = False
        except ValueError:
            problems.add(number, f"score must be an integer, got {score_text!r}")
            ok = False
        if query_id not in queries:
            problems.add(number, f"unknown query id {query_id!r} (not in queries.jsonl)")
            ok = False
        if doc_id not in corpus:
            problems.add(number, f"unknown document id {doc_id!r} (not in corpus.jsonl)")
            ok = False
        if (query_id, doc_id) in first_line:
            problems.add(number, f"duplicate judgment for query {query_id!r}, document {doc_id!r} "
                                 f"(first on line {first_line[(query_id, doc_id)]})")
            ok = False
        if ok:
            first_line[(query_id, doc_id)] = number
            qrels.setdefault(query_id, {})[doc_id] = score
    if not header_seen:
        problems.add(None, "empty file (expected a header and judgments)")
    problems.raise_if_any()
    return qrels
