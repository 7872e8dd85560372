"""Training data: query, positive, negatives, thought (and optional teacher scores).

The file format is the reference one, JSON lines::

    {"query": str, "pos": [str, ...], "neg": [str, ...], "thought": str,
     "pos_scores": [float, ...], "neg_scores": [float, ...], "query_id": str}

``pos`` needs at least one passage; ``neg``, ``thought`` (empty or missing: trained without a thought),
the scores and ``query_id`` are optional; other fields are ignored. Each record becomes one training
row with its first positive. Every problem is reported with its file, line and field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from datasets import Dataset

COLUMNS = ["query", "positive", "negatives", "thought"]
SCORE_COLUMN = "teacher_scores"
MAX_PROBLEMS = 20


class TrainingDataError(ValueError):
    """Bad training records; the message lists each problem as ``file:line: field: message``."""


def _check_record(record, line: str) -> list[str]:
    if not isinstance(record, dict):
        return [f"{line}: expected a JSON object, got {type(record).__name__}"]
    problems = []
    if not isinstance(record.get("query"), str):
        problems.append(f"{line}: field 'query': missing or not a string")
    pos = record.get("pos")
    if not isinstance(pos, list) or not pos or not all(isinstance(p, str) for p in pos):
        problems.append(f"{line}: field 'pos': must be a non-empty list of strings")
    neg = record.get("neg", [])
    if not isinstance(neg, list) or not all(isinstance(n, str) for n in neg):
        problems.append(f"{line}: field 'neg': must be a list of strings")
    thought = record.get("thought", "")
    if thought is not None and not isinstance(thought, str):
        problems.append(f"{line}: field 'thought': must be a string")
    for field, items in (("pos_scores", pos), ("neg_scores", neg)):
        scores = record.get(field)
        if scores is None:
            continue
        if not isinstance(scores, list) or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                                                   for s in scores):
            problems.append(f"{line}: field '{field}': must be a list of numbers")
        elif isinstance(items, list) and len(scores) != len(items):
            problems.append(f"{line}: field '{field}': {len(scores)} scores for {len(items)} passages")
    if ("pos_scores" in record) != ("neg_scores" in record):
        problems.append(f"{line}: fields 'pos_scores'/'neg_scores': give both or neither")
    return problems


def read_records(path: str | os.PathLike) -> list[dict]:
    """Validated reference-format records from a jsonl file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training file not found: {path}")
    records, problems = [], []
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            line = f"{path}:{number}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                problems.append(f"{line}: invalid JSON ({err.msg})")
                continue
            found = _check_record(record, line)
            problems += found
            if not found:
                records.append(record)
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        raise TrainingDataError(f"{len(problems)} problem(s) in {path}:\n  {shown}{more}")
    if not records:
        raise TrainingDataError(f"{path}: no training records")
    return records


def records_to_dataset(records: list[dict]) -> Dataset:
    """One row per record: its first positive, all negatives, its thought and (if given) teacher scores."""
    with_scores = all("pos_scores" in r for r in records)
    if any("pos_scores" in r for r in records) and not with_scores:
        raise TrainingDataError("teacher scores are given for some records but not all")
    rows = {column: [] for column in COLUMNS + ([SCORE_COLUMN] if with_scores else [])}
    for r in records:
        rows["query"].append(r["query"])
        rows["positive"].append(r["pos"][0])
        rows["negatives"].append(list(r.get("neg", [])))
        rows["thought"].append(r.get("thought") or "")
        if with_scores:
            rows[SCORE_COLUMN].append([float(r["pos_scores"][0])] + [float(s) for s in r["neg_scores"]])
    return Dataset.from_dict(rows)


def load_training_data(path: str | os.PathLike) -> Dataset:
    """Read and validate a reference-format jsonl file into a ``datasets.Dataset``."""
    return records_to_dataset(read_records(path))
