"""A teacher committee over one corpus: fused scores of queries against every document.

Each retrieval member (``bm25`` or any Sentence-Transformers bi-encoder) scores a query against every
document of the corpus; its scores are standardised over the corpus for that query (z-scores: mean 0,
standard deviation 1), so members on different scales weigh the same; the fused score is their mean.
This is the normalised score sum of hybrid retrieval; on Cranfield BM25 + all-MiniLM-L6-v2 fused rank
above either member alone.

A ``cross-encoder:NAME`` member (any Sentence-Transformers ``CrossEncoder``) cannot score a whole corpus;
it rescores the pairs the training data keeps (:meth:`CorpusTeacher.pair_scores`), as GPL's teacher does,
while the retrieval members search (round-trip filtering, mining).

One teacher serves three stages of domain adaptation: the round-trip filter of generated questions
(:meth:`rank_of`), hard-negative mining (:meth:`search`) and the teacher scores trained toward.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from o1_embedder.evaluation.bm25 import BM25Index
from o1_embedder.evaluation.fusion import fuse_scores

__all__ = ["DEFAULT_TEACHER", "CorpusTeacher", "parse_teacher"]

logger = logging.getLogger(__name__)

#: the offline default: lexical and dense, fused
DEFAULT_TEACHER = ("bm25", "all-MiniLM-L6-v2")
CROSS_ENCODER_PREFIX = "cross-encoder:"


def parse_teacher(specs: Sequence[str]) -> tuple[list[str], str | None]:
    """``(retrieval members, cross-encoder name or None)``; at least one retrieval member, at most one
    cross-encoder, no member twice."""
    specs = [s.strip() for s in specs]
    if any(not s for s in specs):
        raise ValueError(f"a teacher member name is empty: {list(specs)}")
    if len(set(specs)) != len(specs):
        raise ValueError(f"teacher members must be distinct, got {list(specs)}")
    cross = [s[len(CROSS_ENCODER_PREFIX):].strip() for s in specs if s.startswith(CROSS_ENCODER_PREFIX)]
    retrieval = [s for s in specs if not s.startswith(CROSS_ENCODER_PREFIX)]
    if len(cross) > 1:
        raise ValueError(f"at most one cross-encoder teacher, got {cross}")
    if cross and not cross[0]:
        raise ValueError("'cross-encoder:' needs a model name, e.g. cross-encoder:cross-encoder/ms-marco-MiniLM-L6-v2")
    if not retrieval:
        raise ValueError("the teacher needs at least one retrieval member (bm25 or a bi-encoder) to search the "
                         "corpus; a cross-encoder only rescores")
    return retrieval, (cross[0] if cross else None)


class CorpusTeacher:
    """Fused committee scores against ``texts`` (see the module docstring)."""

    def __init__(self, texts: Sequence[str], members: Sequence[str] = DEFAULT_TEACHER, *, batch_size: int = 64,
                 show_progress_bar: bool = False, cache_dir: str | None = None):
        retrieval, cross = parse_teacher(members)
        self.texts = list(texts)
        self.names = list(members)
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self._bm25: BM25Index | None = None
        self._dense: list[tuple[Any, np.ndarray, str]] = []
        from o1_embedder.evaluation.retrieval import EmbeddingCache, embed_corpus, model_fingerprint
        from o1_embedder.model.loading import load_comparison_model

        cache = EmbeddingCache(cache_dir) if cache_dir else None
        for name in retrieval:
            if name.lower() == "bm25":
                self._bm25 = BM25Index(self.texts)
                continue
            model = load_comparison_model(name)

            def compute(model=model):
                return embed_corpus(model, self.texts, batch_size, show_progress_bar=show_progress_bar)

            if cache is None:
                emb = compute()
            else:  # the corpus is embedded once for every stage that asks (mining, teacher scores)
                keys = EmbeddingCache.corpus_key_parts(model_fingerprint(model),
                                                       [str(i) for i in range(len(self.texts))], self.texts)
                emb = cache.get_or_compute(keys, compute, expected_rows=len(self.texts))
            self._dense.append((model, np.asarray(emb, dtype=np.float32), name))
        self._cross = None
        if cross:
            from sentence_transformers import CrossEncoder

            self._cross = CrossEncoder(cross)

    def committee(self) -> list:
        """The retrieval members as vote committee members (:mod:`o1_embedder.synthesis.vote`), the dense ones
        knowing every corpus embedding already computed, so voting encodes only queries and thoughts."""
        from o1_embedder.synthesis.vote import BM25Member, DenseMember

        members = []
        for name in self.names:
            if name.lower() == "bm25":
                members.append(BM25Member())
        for model, doc_emb, name in self._dense:
            member = DenseMember(model, name=name, batch_size=self.batch_size)
            member.remember(self.texts, doc_emb)
            members.append(member)
        order = {name: i for i, name in enumerate(self.names)}
        return sorted(members, key=lambda m: order.get(m.name, len(order)))

    def describe(self) -> dict:
        return {"members": self.names, "fusion": "mean of per-query z-scores over the corpus"}

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), len(texts))`` fused scores (float32)."""
        queries = list(queries)
        parts = []
        if self._bm25 is not None:
            parts.append(np.stack([self._bm25.scores(q) for q in queries]) if queries
                         else np.zeros((0, len(self.texts))))
        for model, doc_emb, _ in self._dense:
            q = model.encode_query(queries, batch_size=self.batch_size, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
            parts.append(np.asarray(q, dtype=np.float32) @ doc_emb.T)
        return (fuse_scores(parts) / len(parts)).astype(np.float32)

    def search(self, queries: Sequence[str], top_k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Indices and fused scores of each query's ``top_k`` documents, best first (computed in chunks)."""
        top_k = min(top_k, len(self.texts))
        indices, values = [], []
        for start in range(0, len(queries), chunk):
            s = self.scores(queries[start:start + chunk])
            top = np.argpartition(-s, top_k - 1, axis=1)[:, :top_k]
            order = np.take_along_axis(s, top, axis=1).argsort(axis=1)[:, ::-1]
            top = np.take_along_axis(top, order, axis=1)
            indices.append(top)
            values.append(np.take_along_axis(s, top, axis=1))
        if not indices:
            return np.zeros((0, top_k), dtype=np.int64), np.zeros((0, top_k), dtype=np.float32)
        return np.concatenate(indices), np.concatenate(values)

    def pair_scores(self, queries: Sequence[str], passages: Sequence[Sequence[int]],
                    fused: np.ndarray | None = None) -> list[list[float]]:
        """Teacher scores of each query against its passages (corpus indices): the cross-encoder's when there
        is one, else the fused scores (``fused``: the rows of :meth:`scores` when the caller has them)."""
        if self._cross is not None:
            pairs = [(q, self.texts[i]) for q, ps in zip(queries, passages) for i in ps]
            flat = self._cross.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
            out, at = [], 0
            for ps in passages:
                out.append([float(v) for v in flat[at:at + len(ps)]])
                at += len(ps)
            return out
        fused = self.scores(queries) if fused is None else fused
        return [[float(fused[row, i]) for i in ps] for row, ps in enumerate(passages)]
