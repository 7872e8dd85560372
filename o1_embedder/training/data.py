"""Training data: query, positive, negatives, thought (and optional teacher scores).

The file format is the reference one, JSON lines::

    {"query": str, "pos": [str, ...], "neg": [str, ...], "thought": str,
     "pos_scores": [float, ...], "neg_scores": [float, ...], "query_id": str}

``pos`` needs at least one passage; ``neg``, ``thought`` (empty or missing: trained without a thought),
the scores and ``query_id`` are optional; other fields are ignored. Each record becomes one training
row with its first positive. Every problem is reported with its file, line and field (validation is
shared with the synthesis pipeline: :mod:`o1_embedder.data.records`).
"""

from __future__ import annotations

import logging
import os

from datasets import Dataset

from o1_embedder.data.records import RecordFile, Stage

COLUMNS = ["anchor", "positive", "negatives", "thought"]
SCORE_COLUMN = "teacher_scores"

logger = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """Training records that cannot be turned into a dataset (e.g. teacher scores on only some records)."""


def read_records(path: str | os.PathLike, require_negatives: bool = False) -> list[dict]:
    """Validated reference-format records (see :class:`o1_embedder.data.records.RecordFile`).

    ``thought`` is optional: a record without it is trained in the no-thought format. A present but
    empty thought is an error (it is what a failed synthesis looks like), so is a missing file. With
    ``require_negatives`` every record needs a non-empty ``neg`` (training with hard negatives), checked
    here with file and line rather than when a batch reaches the record.
    """
    return list(RecordFile(path, Stage.MINED if require_negatives else Stage.BASE))


def records_to_dataset(records: list[dict]) -> Dataset:
    """One row per record in Sentence-Transformers' column order: ``anchor`` (the query), ``positive`` (its first
    positive), ``negatives`` (all of them, sampled per batch by the collator), ``thought`` and, if given,
    ``teacher_scores``."""
    with_scores = all("pos_scores" in r for r in records)
    if any("pos_scores" in r for r in records) and not with_scores:
        raise TrainingDataError("teacher scores are given for some records but not all")
    rows: dict[str, list] = {column: [] for column in COLUMNS + ([SCORE_COLUMN] if with_scores else [])}
    for r in records:
        rows["anchor"].append(r["query"])
        rows["positive"].append(r["pos"][0])
        rows["negatives"].append(list(r.get("neg", [])))
        rows["thought"].append(r.get("thought") or "")
        if with_scores:
            rows[SCORE_COLUMN].append([float(r["pos_scores"][0])] + [float(s) for s in r["neg_scores"]])
    several = [r for r in records if len(r["pos"]) > 1]
    if several:
        logger.warning("%d of %d records have more than one positive; training uses the first of each (%d passages "
                       "unused): write one record per positive to train on all of them", len(several), len(records),
                       sum(len(r["pos"]) - 1 for r in several))
    return Dataset.from_dict(rows)


def load_training_data(path: str | os.PathLike, require_negatives: bool = False) -> Dataset:
    """Read and validate a reference-format jsonl file into a ``datasets.Dataset``."""
    return records_to_dataset(read_records(path, require_negatives))
