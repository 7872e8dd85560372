"""A local BEIR folder as an mteb retrieval task, so ``mteb.evaluate`` runs offline on local data.

The task is built with mteb's public task classes (``TaskMetadata``, ``AbsTaskRetrieval``); only ``load_data`` is
replaced, to read the folder with :func:`o1_embedder.data.load_beir` (which validates every line and names the file
and line of every problem) instead of downloading a Hugging Face dataset.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mteb import TaskMetadata
from mteb.abstasks import AbsTaskRetrieval
from mteb.timing import TimingStack

from ...data.beir import BeirDataset, load_beir

__all__ = ["LocalBeirRetrieval", "beir_task", "beir_task_class"]


class LocalBeirRetrieval(AbsTaskRetrieval):
    """Base class of retrieval tasks read from a local BEIR folder; :func:`beir_task_class` makes one per folder.

    Like mteb's own BEIR tasks it evaluates one split, keeps only the queries with at least one relevant judgment
    (grade > 0; judgments with grade 0 stay in the qrels) and embeds documents as ``"title text"``.
    """

    beir_path: Path
    beir_split: str = "test"
    _beir_data: BeirDataset | None = None  # the copy validated at class creation, handed to the first load

    def load_data(self, num_proc: int | None = None, *, timer: TimingStack | None = None, **kwargs: Any) -> None:
        """Read the folder into mteb's retrieval layout (corpus, queries, relevant_docs), then mteb's transform."""
        if self.data_loaded:
            return
        timer = timer or TimingStack()
        cls = type(self)
        with timer("Data loading", log_message=f"Loading local BEIR folder {cls.beir_path} ({cls.beir_split})..."):
            data = cls._beir_data or load_beir(cls.beir_path, split=cls.beir_split, name=self.metadata.name)
            cls._beir_data = None
            self.dataset = {"default": {cls.beir_split: _retrieval_split(data)}}  # type: ignore[dict-item]
        with timer("Dataset transform"):
            self.dataset_transform(num_proc=num_proc)
        self.data_loaded = True


def _retrieval_split(data: BeirDataset) -> dict[str, Any]:
    """One split in mteb's retrieval layout: judged queries only, graded qrels, documents with title and text."""
    from datasets import Dataset

    query_ids = data.judged_queries()
    corpus = Dataset.from_dict({"id": list(data.corpus),
                                "title": [d.get("title") or "" for d in data.corpus.values()],
                                "text": [d.get("text") or "" for d in data.corpus.values()]})
    queries = Dataset.from_dict({"id": query_ids, "text": [data.queries[q] for q in query_ids]})
    qrels = {qid: {doc: int(grade) for doc, grade in data.qrels[qid].items()} for qid in query_ids}
    return {"corpus": corpus, "queries": queries, "relevant_docs": qrels, "top_ranked": None}


def _beir_revision(path: Path, split: str) -> str:
    """A 16-hex content hash of the files the task reads, recorded by mteb as the dataset revision."""
    digest = hashlib.sha256()
    for file in (path / "corpus.jsonl", path / "queries.jsonl", path / "qrels" / f"{split}.tsv"):
        digest.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def beir_task_class(path: str | os.PathLike, name: str | None = None, split: str = "test", *,
                    languages: Sequence[str] = ("eng-Latn",), description: str | None = None
                    ) -> type[LocalBeirRetrieval]:
    """A retrieval task class (instantiable without arguments, as mteb's task registry needs) for a BEIR folder.

    The folder is loaded and validated now with :func:`o1_embedder.data.load_beir` (errors name the file and line).
    ``name`` defaults to the folder name; ``languages`` are mteb language-script codes (the task's ``eval_langs``;
    BEIR folders don't say, so English is assumed unless given). The task's dataset revision is a content hash of
    ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{split}.tsv``.
    """
    root = Path(path).resolve()
    data = load_beir(root, split=split, name=name)
    judged = len(data.judged_queries())
    if not judged:
        raise ValueError(f"{root / 'qrels' / (split + '.tsv')}: no query has a relevant judgment (grade > 0); "
                         f"nothing to evaluate")
    task_name = name or data.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", task_name) or ".." in task_name:
        raise ValueError(f"task name {task_name!r} must be a plain name (letters, digits, '.', '_', '-'; no path "
                         f"separators or '..'): mteb writes results to a file named after it")
    metadata = TaskMetadata(
        name=task_name,
        dataset={"path": str(root), "revision": _beir_revision(root, split)},
        description=description or (f"Local BEIR-format collection {root} ({split} split: {len(data.corpus)} "
                                    f"documents, {judged} queries with relevant judgments)."),
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=list(languages),
        main_score="ndcg_at_10",
        dialect=[],
        bibtex_citation="",
    )
    class_name = "LocalBeir_" + "".join(c if c.isalnum() else "_" for c in task_name)
    return type(class_name, (LocalBeirRetrieval,), {
        "metadata": metadata, "beir_path": root, "beir_split": split, "_beir_data": data,
        "__module__": __name__, "__doc__": metadata.description})


def beir_task(path: str | os.PathLike, name: str | None = None, split: str = "test", **kwargs: Any
              ) -> LocalBeirRetrieval:
    """An mteb retrieval task instance for a BEIR folder (see :func:`beir_task_class`), for ``mteb.evaluate``."""
    return beir_task_class(path, name, split, **kwargs)()
