"""Teacher scores of every training query against every training passage, for distillation over a whole batch.

A record's own teacher scores cover its positive and its mined negatives; a batch of 16 queries with one hard
negative each gives each query's KL term two scores to match. The batch has already embedded 32 passages,
though, and a table of the teacher's score for every (query, passage) pair of the training set lets the term
match each query's whole row of them at no extra model cost (in-batch distillation, as in TAS-B, Hofstätter
et al. 2021). :class:`~o1_embedder.training.collator.JointCollator` looks a batch's rows up here and
:class:`~o1_embedder.training.loss.JointLoss` takes the KL over every passage of the batch.

The table is an ``.npz`` file: ``scores`` (queries x passages, float32) and the sha256 of each query's and each
passage's text (``query_keys``, ``passage_keys``), so it holds no text and is matched to the records by content.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = ["TeacherTable", "text_key"]


def text_key(text: str) -> str:
    """The key of a text in a table: the first 32 hex digits of its UTF-8 sha256."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class TeacherTable:
    """``scores[i, j]``: the teacher's score of query ``i`` against passage ``j``, looked up by text."""

    def __init__(self, query_keys: Sequence[str], passage_keys: Sequence[str], scores: np.ndarray,
                 source: str = "teacher table"):
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (len(query_keys), len(passage_keys)):
            raise ValueError(f"{source}: scores have shape {scores.shape}, expected ({len(query_keys)}, "
                             f"{len(passage_keys)}) for its query and passage keys")
        if not np.isfinite(scores).all():
            raise ValueError(f"{source}: holds a non-finite teacher score")
        self.source = source
        self.scores = scores
        self.query_keys = [str(k) for k in query_keys]
        self.passage_keys = [str(k) for k in passage_keys]
        self._rows = {k: i for i, k in enumerate(self.query_keys)}
        self._columns = {k: j for j, k in enumerate(self.passage_keys)}
        if len(self._rows) != len(self.query_keys) or len(self._columns) != len(self.passage_keys):
            raise ValueError(f"{source}: a query or passage key occurs twice")

    @classmethod
    def from_texts(cls, queries: Sequence[str], passages: Sequence[str], scores: np.ndarray) -> TeacherTable:
        """A table of ``scores`` (``len(queries)`` x ``len(passages)``) keyed by the texts (each text once)."""
        return cls([text_key(q) for q in queries], [text_key(p) for p in passages], scores)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TeacherTable:
        source = os.fspath(path)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"teacher table {source} does not exist")
        try:
            data = np.load(source, allow_pickle=False)
        except (OSError, EOFError, ValueError) as err:
            raise ValueError(f"teacher table {source}: not a readable .npz file ({err})") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"teacher table {source}: a single array, not an .npz file of query_keys, passage_keys "
                             f"and scores")
        with data:
            missing = [k for k in ("query_keys", "passage_keys", "scores") if k not in data.files]
            if missing:
                raise ValueError(f"teacher table {source}: no {', '.join(missing)} array (expected query_keys, "
                                 f"passage_keys and scores)")
            return cls(data["query_keys"].tolist(), data["passage_keys"].tolist(), data["scores"], source)

    def save(self, path: str | os.PathLike) -> None:
        """Write the table atomically (a killed write leaves no half-written file)."""
        from o1_embedder.files import atomic_write

        atomic_write(path, lambda handle: np.savez(handle, query_keys=np.array(self.query_keys),
                                                    passage_keys=np.array(self.passage_keys), scores=self.scores))

    def missing(self, queries: Iterable[str], passages: Iterable[str]) -> tuple[list[str], list[str]]:
        """The queries and the passages the table has no score for."""
        return ([q for q in queries if text_key(q) not in self._rows],
                [p for p in passages if text_key(p) not in self._columns])

    def lookup(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        """``(len(queries), len(passages))`` teacher scores (float32)."""
        rows, columns = [], []
        for text in queries:
            if (row := self._rows.get(text_key(text))) is None:
                raise ValueError(f"{self.source} has no row for the query {_shorten(text)!r}")
            rows.append(row)
        for text in passages:
            if (column := self._columns.get(text_key(text))) is None:
                raise ValueError(f"{self.source} has no column for the passage {_shorten(text)!r}")
            columns.append(column)
        return torch.from_numpy(self.scores[np.ix_(rows, columns)].copy())


def _shorten(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
