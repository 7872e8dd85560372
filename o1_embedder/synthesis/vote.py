"""Refinement: a committee of retrievers votes for the best candidate thought of each record.

Each member (any Sentence-Transformers model, or BM25) scores the record's passages (``pos + neg``)
against the query *augmented with each candidate* (``"{query} {thought}"``), and against the query
alone (the baseline, kept for diagnostics). From its scores a member derives, per candidate:

* ``pos_ranks``: the rank of each positive among the negatives (1 = above every negative; a tie with a
  negative counts half), so the query and the negatives matter, not the thought alone against ``pos[0]``;
* ``quality``: the mean reciprocal of those ranks, in (0, 1] -- rank-based, hence on the same scale for
  every member whatever its raw scores;
* ``margin``: (mean positive score - mean negative score) / std of all the member's scores for the
  record (every candidate and the baseline), a scale-free tie-breaker between candidates of equal quality;
* ``rank``: the candidate's rank among the record's candidates by (quality, margin), 1 = best, exact
  ties share the average rank.

Votes:

* ``hard`` (default, the paper's majority): each member gives one vote to its rank-1 candidate (split
  evenly on a tie); most votes wins, ties broken by the lower mean rank, then the lower index;
* ``soft``: the highest mean quality over members wins, ties broken by mean rank, then index.

The output record is the input plus ``thought`` (the winner), ``committee`` (member names) and
``votes`` (method, winner, tally or mean quality, mean ranks, and every member's numbers).
"""

from __future__ import annotations

import abc
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from o1_embedder.data.records import JsonlWriter, Stage, with_ids
from o1_embedder.evaluation.bm25 import BM25Index
from o1_embedder.synthesis.explore import progress_bar

__all__ = [
    "DEFAULT_COMMITTEE",
    "BM25Member",
    "CommitteeMember",
    "DenseMember",
    "MemberJudgement",
    "VoteReport",
    "augment",
    "decide",
    "judge_scores",
    "load_committee",
    "load_member",
    "vote",
]

logger = logging.getLogger(__name__)

#: The offline default committee: a small dense retriever and a lexical one.
DEFAULT_COMMITTEE = ("all-MiniLM-L6-v2", "bm25")
METHODS = ("hard", "soft")


def augment(query: str, thought: str) -> str:
    """The text a member retrieves with: the query followed by the thought."""
    return f"{query} {thought}".strip()


# -------------------------------------------------------------------------------------------- members
class CommitteeMember(abc.ABC):
    """A retriever that scores small groups of (queries x passages)."""

    name: str = "member"
    #: whether :meth:`prepare` needs to see every passage first (collection statistics)
    needs_collection: bool = False

    def prepare(self, passages: Iterable[str]) -> None:  # noqa: B027 (an optional hook)
        """See every passage of the input once before scoring (BM25 collection statistics)."""

    @abc.abstractmethod
    def score(self, groups: Sequence[tuple[list[str], list[str]]]) -> list[np.ndarray]:
        """For each ``(queries, passages)`` group, a ``(len(queries), len(passages))`` float array."""


class DenseMember(CommitteeMember):
    """A Sentence-Transformers model: ``encode_query`` / ``encode_document`` (their prompts apply) and the
    model's own similarity function. Texts repeated within a call are encoded once."""

    def __init__(self, model, name: str | None = None, batch_size: int = 32):
        self.model = model
        self.name = name or getattr(getattr(model, "model_card_data", None), "base_model", None) or "dense"
        self.batch_size = batch_size
        self.known: dict[str, np.ndarray] = {}

    def remember(self, passages: Sequence[str], embeddings: np.ndarray) -> None:
        """Passage embeddings already computed with this model (``encode_document``): never encoded again."""
        if len(passages) != len(embeddings):
            raise ValueError(f"{len(passages)} passages but {len(embeddings)} embeddings")
        self.known.update(zip(passages, np.asarray(embeddings)))

    def _passage_embeddings(self, passages: list[str]):
        import torch

        new = [p for p in passages if p not in self.known]
        if new:
            emb = self.model.encode_document(new, batch_size=self.batch_size, convert_to_numpy=True,
                                             show_progress_bar=False)
            if not self.known:  # nothing remembered: no need to keep what this call encoded
                order = {p: i for i, p in enumerate(new)}
                return torch.from_numpy(np.asarray(emb)[[order[p] for p in passages]])
            self.known.update(zip(new, np.asarray(emb)))
        return torch.from_numpy(np.stack([self.known[p] for p in passages]))

    def score(self, groups):
        queries = list(dict.fromkeys(q for qs, _ in groups for q in qs))
        passages = list(dict.fromkeys(p for _, ps in groups for p in ps))
        q_index = {q: i for i, q in enumerate(queries)}
        p_index = {p: i for i, p in enumerate(passages)}
        q_emb = self.model.encode_query(queries, batch_size=self.batch_size, convert_to_tensor=True,
                                        show_progress_bar=False)
        p_emb = self._passage_embeddings(passages).to(device=q_emb.device, dtype=q_emb.dtype)
        out = []
        for qs, ps in groups:
            sim = self.model.similarity(q_emb[[q_index[q] for q in qs]], p_emb[[p_index[p] for p in ps]])
            out.append(sim.float().cpu().numpy().astype(np.float64))
        return out


class BM25Member(CommitteeMember):
    """BM25 over every distinct passage of the input (:meth:`prepare`), with the index evaluation uses
    (:class:`~o1_embedder.evaluation.bm25.BM25Index`: bm25s defaults, English stopwords, no stemming), so
    scores do not depend on how records are chunked."""

    name = "bm25"
    needs_collection = True

    def __init__(self):
        self.index: BM25Index | None = None
        self.position: dict[str, int] = {}

    def prepare(self, passages: Iterable[str]) -> None:
        for passage in passages:
            self.position.setdefault(passage, len(self.position))
        self.index = BM25Index(list(self.position))

    def score(self, groups):
        if self.index is None:
            raise RuntimeError("BM25Member.prepare() must see the passages before scoring")
        out = []
        for queries, passages in groups:
            missing = [p for p in passages if p not in self.position]
            if missing:
                raise ValueError(f"BM25Member was not prepared with the passage {missing[0][:80]!r}")
            columns = [self.position[p] for p in passages]
            out.append(np.stack([self.index.scores(q)[columns] for q in queries]) if queries
                       else np.zeros((0, len(passages))))
        return out


def load_member(spec: str, batch_size: int = 32) -> CommitteeMember:
    """``bm25``, or a Sentence-Transformers model by folder or hub id (``all-MiniLM-L6-v2`` works offline)."""
    if spec.strip().lower() == "bm25":
        return BM25Member()
    from o1_embedder.model.loading import load_comparison_model

    return DenseMember(load_comparison_model(spec), name=spec, batch_size=batch_size)


def load_committee(specs: Sequence[str] = DEFAULT_COMMITTEE, batch_size: int = 32) -> list[CommitteeMember]:
    if not specs:
        raise ValueError("the committee needs at least one member")
    if len(set(specs)) != len(specs):
        raise ValueError(f"committee members must be distinct, got {list(specs)}")
    if any(not isinstance(spec, str) or not spec.strip() for spec in specs):
        raise ValueError(f"a committee member name is empty: {list(specs)}")
    return [load_member(spec, batch_size) for spec in specs]


# ---------------------------------------------------------------------------------------------- judging
@dataclass
class MemberJudgement:
    """One member's view of one record's candidates (see the module docstring)."""

    quality: list[float]
    margin: list[float]
    rank: list[float]
    pos_ranks: list[list[float]]
    baseline_quality: float
    baseline_pos_ranks: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"quality": _r(self.quality), "margin": _r(self.margin), "rank": _r(self.rank),
                "pos_ranks": [_r(r) for r in self.pos_ranks],
                "baseline": {"quality": _r(self.baseline_quality), "pos_ranks": _r(self.baseline_pos_ranks)}}


def _r(value):
    if isinstance(value, list):
        return [round(float(v), 6) for v in value]
    return round(float(value), 6)


def _positive_ranks(row: np.ndarray, num_pos: int) -> list[float]:
    pos, neg = row[:num_pos], row[num_pos:]
    return [1.0 + float(np.sum(neg > s)) + 0.5 * float(np.sum(neg == s)) for s in pos]


def _margins(scores: np.ndarray, num_pos: int) -> list[float]:
    """Per row: (mean positive - mean negative score) / std of all the record's scores (every row)."""
    finite = scores[np.isfinite(scores)]
    spread = float(np.std(finite)) if finite.size else 0.0
    if spread <= 0 or not np.isfinite(spread):
        return [0.0] * len(scores)
    return [float((row[:num_pos].mean() - row[num_pos:].mean()) / spread) if np.isfinite(row).all() else 0.0
            for row in scores]


def _average_ranks(keys: list[tuple[float, float]]) -> list[float]:
    """1-based ranks of candidates sorted by key descending; exact ties share the average rank."""
    order = sorted(range(len(keys)), key=lambda i: (-keys[i][0], -keys[i][1], i))
    ranks = [0.0] * len(keys)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and keys[order[end + 1]] == keys[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def judge_scores(scores: np.ndarray, num_pos: int) -> MemberJudgement:
    """A member's judgement from its score matrix: row 0 the query alone, rows 1.. the candidates;
    columns the positives, then the negatives."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 2 or not 0 < num_pos < scores.shape[1]:
        raise ValueError(f"expected (1 + candidates, positives + negatives) scores with at least one negative, "
                         f"got shape {scores.shape} with {num_pos} positives")
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    pos_ranks = [_positive_ranks(row, num_pos) for row in scores]
    quality = [float(np.mean([1.0 / r for r in ranks])) for ranks in pos_ranks]
    margins = _margins(scores, num_pos)[1:]
    return MemberJudgement(quality=quality[1:], margin=margins,
                           rank=_average_ranks([(round(q, 12), round(m, 12)) for q, m in zip(quality[1:], margins)]),
                           pos_ranks=pos_ranks[1:], baseline_quality=quality[0], baseline_pos_ranks=pos_ranks[0])


def decide(judgements: dict[str, MemberJudgement], method: str = "hard") -> dict[str, Any]:
    """The committee's decision: ``winner`` (candidate index), ``mean_rank`` and ``tally`` (hard) or
    ``score`` (soft: mean quality)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    members = list(judgements.values())
    n = len(members[0].rank)
    mean_rank = [sum(m.rank[i] for m in members) / len(members) for i in range(n)]
    if method == "hard":
        tally = [0.0] * n
        for m in members:
            best = min(m.rank)
            top = [i for i in range(n) if m.rank[i] == best]
            for i in top:
                tally[i] += 1.0 / len(top)
        primary, key = tally, "tally"
    else:
        primary = [sum(m.quality[i] for m in members) / len(members) for i in range(n)]
        key = "score"
    winner = min(range(n), key=lambda i: (-round(primary[i], 9), round(mean_rank[i], 9), i))
    return {"method": method, "winner": winner, key: _r(primary), "mean_rank": _r(mean_rank)}


# ------------------------------------------------------------------------------------------------ vote
@dataclass
class VoteReport:
    """What a :func:`vote` run did, with the committee's mean quality of the query alone, of an average
    candidate and of the winner (per member): thoughts that help retrieval raise it above the query alone."""

    output: Path
    written: int = 0
    skipped: int = 0
    seconds: float = 0.0
    quality: dict[str, dict[str, float]] = field(default_factory=dict)  # member -> {baseline, candidates, winner}
    winners: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        lines = [f"wrote {self.written} records to {self.output} in {self.seconds:.1f}s; {self.skipped} already done"]
        if self.written:
            lines.append("mean quality (reciprocal rank of positives among negatives):")
            lines.append(f"  {'member':<28} {'query alone':>12} {'candidates':>11} {'voted':>8}")
            for name, sums in self.quality.items():
                lines.append(f"  {name:<28} {sums['baseline'] / self.written:>12.4f} "
                             f"{sums['candidates'] / self.written:>11.4f} {sums['winner'] / self.written:>8.4f}")
        return "\n".join(lines)


def _reiterable(records: Iterable[dict]) -> Iterable[dict]:
    """The records, as a list when they are a one-shot iterator (BM25 statistics need a first pass)."""
    return list(records) if iter(records) is records else records


def vote(records: Iterable[dict], members: Sequence[CommitteeMember], output: str | Path, *, method: str = "hard",
         chunk_size: int = 128, overwrite: bool = False, log: Callable[[str], None] | None = None,
         show_progress_bar: bool = False) -> VoteReport:
    """Pick each record's ``thought`` from its ``candidates`` by committee vote; stream to ``output`` (resumable).

    ``records`` need ``query``, ``pos``, ``neg`` (at least one) and ``candidates``; e.g. a
    :class:`~o1_embedder.data.records.RecordFile` with ``Stage.CANDIDATES``. Records already in
    ``output`` are skipped (a re-run with another committee or method is refused unless ``overwrite``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not members:
        raise ValueError("the committee needs at least one member")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"committee member names must be distinct, got {names}")
    log = log or (lambda message: logger.info("%s", message))
    records = _reiterable(records)
    output = Path(output)
    report = VoteReport(output=output, quality={n: {"baseline": 0.0, "candidates": 0.0, "winner": 0.0} for n in names})

    started = time.perf_counter()
    with JsonlWriter(output, overwrite=overwrite, inputs=[getattr(records, "path", None)]) as writer:
        if writer.existing:
            previous = writer.existing[0]
            if previous.get("committee") != names or (previous.get("votes") or {}).get("method") != method:
                raise ValueError(f"{output} was written by committee {previous.get('committee')} with method "
                                 f"{(previous.get('votes') or {}).get('method')!r}; now {names} / {method!r}: "
                                 f"use a new output file or --overwrite")
        collection = [m for m in members if m.needs_collection]
        if collection:
            log(f"vote: reading the passages for {', '.join(m.name for m in collection)} statistics")
            for member in collection:
                member.prepare(p for r in _with_ids(records) for p in itertools.chain(r["pos"], r["neg"]))
        pending = _not_done(_with_ids(records), writer.done, report)
        bar = progress_bar(records, None, "vote", show_progress_bar)
        while True:
            chunk = list(itertools.islice(pending, chunk_size))
            if not chunk:
                break
            groups = [([r["query"]] + [augment(r["query"], c) for c in r["candidates"]], r["pos"] + r["neg"])
                      for r in chunk]
            scores = {m.name: m.score(groups) for m in members}
            for k, record in enumerate(chunk):
                judgements = {name: judge_scores(scores[name][k], len(record["pos"])) for name in names}
                votes = decide(judgements, method)
                votes["members"] = {name: j.to_dict() for name, j in judgements.items()}
                winner = votes["winner"]
                writer.write({**record, "thought": record["candidates"][winner], "committee": names, "votes": votes})
                report.written += 1
                report.winners[winner] += 1
                for name, j in judgements.items():
                    sums = report.quality[name]
                    sums["baseline"] += j.baseline_quality
                    sums["candidates"] += float(np.mean(j.quality))
                    sums["winner"] += j.quality[winner]
            report.seconds = time.perf_counter() - started
            if bar is not None:
                bar.n = report.written + report.skipped
                bar.refresh()
            log(f"vote: {report.written} written, {report.skipped} already done")
        if bar is not None:
            bar.close()
    report.seconds = time.perf_counter() - started
    return report


def _not_done(records: Iterable[dict], done: set[str], report: VoteReport) -> Iterable[dict]:
    for record in records:
        if record["query_id"] in done:
            report.skipped += 1
        else:
            yield record


def _with_ids(records: Iterable[dict]) -> Iterator[dict]:
    return with_ids(records, Stage.CANDIDATES)
