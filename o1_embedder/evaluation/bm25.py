"""BM25, the lexical baseline of evaluation and the lexical member of the synthesis committee: one index.

``bm25s`` with its defaults (Lucene scoring, ``k1=1.5``, ``b=0.75``), lower case, English stopwords, no
stemming. Texts with no known term (empty, only stopwords, unseen words) match nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BM25Index"]


class BM25Index:
    """A ``bm25s`` index over ``texts``: :meth:`search` (top k) and :meth:`scores` (every text)."""

    def __init__(self, texts: Sequence[str], show_progress: bool = False):
        try:
            import bm25s
        except ImportError as err:
            raise ModuleNotFoundError("BM25 needs bm25s: pip install bm25s") from err
        self.size = len(texts)
        self.show_progress = show_progress
        self.tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        tokens = self.tokenizer.tokenize(list(texts), update_vocab=True, return_as="ids", show_progress=show_progress)
        self.retriever = bm25s.BM25()
        self.retriever.index(tokens, show_progress=show_progress)
        # bm25s gives a text without known tokens the id of the empty string, which would then "match" empty
        # texts: it is dropped from every query.
        self._empty = self.tokenizer.get_vocab_dict().get("")

    def query_tokens(self, queries: Sequence[str]) -> list[list[int]]:
        if not queries:
            return []
        tokens = self.tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids",
                                         show_progress=self.show_progress)
        return [[t for t in row if t != self._empty] for row in tokens]

    def search(self, queries: Sequence[str], top_k: int) -> list[list[tuple[int, float]]]:
        """For each query its ``(text index, score)`` pairs, best first, at most ``top_k``, scores > 0."""
        tokens = self.query_tokens(queries)
        out: list[list[tuple[int, float]]] = [[] for _ in tokens]
        searchable = [row for row, t in enumerate(tokens) if t]
        if not searchable or not self.size:
            return out
        indices, scores = self.retriever.retrieve([tokens[row] for row in searchable], k=min(top_k, self.size),
                                                  show_progress=self.show_progress, n_threads=1)
        for position, row in enumerate(searchable):
            out[row] = [(int(i), float(s)) for i, s in zip(indices[position], scores[position]) if s > 0]
        return out

    def scores(self, query: str) -> np.ndarray:
        """The query's score for every indexed text (float64; zeros when it has no known term)."""
        tokens = self.query_tokens([query])[0]
        if not tokens or not self.size:
            return np.zeros(self.size)
        return np.asarray(self.retriever.get_scores(tokens), dtype=np.float64)
