"""The eval job's results as mteb result files, written with mteb's own classes so that mteb reads them back.

Layout (``mteb.ResultCache(cache_path=FOLDER)`` finds them)::

    FOLDER/results/o1-embedder__{row}/{revision}/{task}.json   a ``mteb.TaskResult``
    FOLDER/results/o1-embedder__{row}/{revision}/model_meta.json

Each row of the table (``trained (think)``, ``trained (no think)``, ``BM25`` ...) is a model of its own name, so
thinking and not thinking are never averaged together by mteb's loaders. ``revision`` is the model's fingerprint
where the result records one (a retrained model never overwrites its predecessor's file), else ``local``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["mteb_model_name", "write_task_result"]


def mteb_model_name(row: str) -> str:
    """``"trained (think)"`` -> ``"o1-embedder/trained-think"``: a name mteb can keep as a folder."""
    return "o1-embedder/" + (re.sub(r"[^A-Za-z0-9._-]+", "-", row).strip("-").lower() or "model")


def write_task_result(result: Mapping[str, Any], folder: str | Path) -> Path:
    """Write one evaluation result (:func:`~o1_embedder.evaluation.retrieval.evaluate_dense` / ``evaluate_bm25``)
    as mteb writes results; returns the task file's path."""
    import mteb
    from mteb import TaskResult

    from o1_embedder.evaluation.mteb.meta import _COMMON_FIELDS, _model_meta
    from o1_embedder.files import atomic_write_text

    metrics = result.get("metrics", {})
    revision = str(result.get("fingerprint") or "local")[:40]
    meta = _model_meta({**_COMMON_FIELDS, "name": mteb_model_name(str(result.get("name", "model"))),
                        "revision": revision, "loader": None})
    scores = {key.replace("@", "_at_"): value for key, value in metrics.items()}
    task = TaskResult(dataset_revision=str(result.get("dataset_revision") or "local"),
                      task_name=str(result.get("dataset") or "task"), mteb_version=mteb.__version__,
                      evaluation_time=float(result.get("seconds_corpus", 0.0) + result.get("seconds_queries", 0.0)),
                      kg_co2_emissions=None,
                      scores={result.get("split", "test"): [{**scores, "main_score": metrics.get("ndcg@10"),
                                                             "hf_subset": "default", "languages": ["eng-Latn"]}]})
    target = Path(folder) / "results" / meta.model_name_as_path() / revision
    path = target / f"{task.task_name}.json"
    data = task.model_dump()  # as TaskResult.to_disk writes it, into a file that appears whole
    data["date"] = task.date.timestamp() if task.date else None
    task._round_scores(data["scores"], 6)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    atomic_write_text(target / "model_meta.json", json.dumps(meta.to_dict(), default=str) + "\n")
    return path
