"""Refinement: members score query + thought against positives and negatives; hard and soft votes; resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synth_helpers import one_thread  # noqa: F401  (fixture)

from o1_embedder.data.records import RecordFile, Stage
from o1_embedder.synthesis.vote import (
    BM25Member,
    CommitteeMember,
    DenseMember,
    MemberJudgement,
    augment,
    decide,
    judge_scores,
    load_committee,
    vote,
)


def judgement(quality, margin=None, rank=None) -> MemberJudgement:
    n = len(quality)
    return MemberJudgement(quality=quality, margin=margin or [0.0] * n, rank=rank or list(range(1, n + 1)),
                           pos_ranks=[[1.0]] * n, baseline_quality=0.5, baseline_pos_ranks=[2.0])


def test_judge_scores_ranks_positives_among_negatives():
    # row 0: the query alone; rows 1..3: three candidates; columns: 2 positives, then 3 negatives
    scores = np.array([
        [0.5, 0.2, 0.6, 0.1, 0.0],   # baseline: pos0 second, pos1 third-ish
        [0.9, 0.8, 0.3, 0.2, 0.1],   # both positives on top
        [0.1, 0.1, 0.5, 0.4, 0.3],   # both positives below every negative
        [0.9, 0.3, 0.3, 0.2, 0.1],   # pos1 ties with a negative: counts half
    ])
    j = judge_scores(scores, num_pos=2)
    assert j.baseline_pos_ranks == [2.0, 2.0] and j.baseline_quality == 0.5
    assert j.pos_ranks == [[1.0, 1.0], [4.0, 4.0], [1.0, 1.5]]
    assert j.quality == pytest.approx([1.0, 0.25, (1 + 1 / 1.5) / 2])
    assert j.rank == [1.0, 3.0, 2.0]
    assert j.margin[0] > j.margin[2] > 0 > j.margin[1]
    # quality ties are broken by the scale-free margin; exact ties share the average rank
    same = judge_scores(np.array([[1, 0], [0.9, 0.1], [0.6, 0.5], [0.9, 0.1]], dtype=float), num_pos=1)
    assert same.quality == [1.0, 1.0, 1.0] and same.rank == [1.5, 3.0, 1.5]
    # only the order of a member's scores matters: a member on another scale judges the same
    scaled = judge_scores(scores * 37.0 + 5.0, num_pos=2)
    assert scaled.quality == j.quality and scaled.rank == j.rank and scaled.margin == pytest.approx(j.margin)
    with pytest.raises(ValueError, match="at least one negative"):
        judge_scores(np.ones((3, 2)), num_pos=2)


def test_hard_vote_is_a_majority_with_ties_broken_by_mean_rank():
    a = judgement([1.0, 0.5, 0.5], rank=[1, 2, 3])
    b = judgement([0.5, 1.0, 0.5], rank=[3, 1, 2])
    c = judgement([0.5, 1.0, 0.5], rank=[2, 1, 3])
    decision = decide({"a": a, "b": b, "c": c}, "hard")
    assert decision["winner"] == 1 and decision["tally"] == [1.0, 2.0, 0.0]
    # one vote each for 0 and 1: the lower mean rank wins (candidate 1: (2 + 1) / 2 < candidate 0: (1 + 3) / 2)
    tie = decide({"a": a, "b": b}, "hard")
    assert tie["tally"] == [1.0, 1.0, 0.0] and tie["mean_rank"] == [2.0, 1.5, 2.5] and tie["winner"] == 1
    # a member with tied first choices splits its vote
    split = decide({"a": judgement([1, 1, 0], rank=[1.5, 1.5, 3])}, "hard")
    assert split["tally"] == [0.5, 0.5, 0.0] and split["winner"] == 0


def test_soft_vote_averages_rank_based_quality():
    a = judgement([1.0, 0.9, 0.1], rank=[1, 2, 3])
    b = judgement([0.2, 1.0, 0.1], rank=[2, 1, 3])
    soft = decide({"a": a, "b": b}, "soft")
    assert soft["winner"] == 1 and soft["score"] == pytest.approx([0.6, 0.95, 0.1])
    # the hard vote sees only first choices: 1:1, equal mean ranks (1.5), so the lower index wins
    hard = decide({"a": a, "b": b}, "hard")
    assert hard["tally"] == [1.0, 1.0, 0.0] and hard["mean_rank"] == [1.5, 1.5, 3.0] and hard["winner"] == 0
    with pytest.raises(ValueError, match="method"):
        decide({"a": a}, "majority")


def test_bm25_member_matches_a_bm25s_index_of_the_collection():
    import bm25s

    passages = ["the lift of a swept wing at high speed", "heat transfer in a composite slab",
                "boundary layer heat transfer on a flat plate", "wing wing flutter of heated wings", "drag"]
    member = BM25Member()
    member.prepare(passages + passages[:2])  # duplicates count once
    queries = ["heat transfer of a wing", "wing lift lift"]
    [ours] = member.score([(queries, passages)])
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passages, stopwords="en", show_progress=False), show_progress=False)
    for i, query in enumerate(queries):
        tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        reference = retriever.get_scores(tokens)
        np.testing.assert_allclose(ours[i], reference, rtol=1e-5)
    with pytest.raises(RuntimeError, match="prepare"):
        BM25Member().score([(["q"], ["p"])])


class Recorder(CommitteeMember):
    """A member that records the queries it is shown and scores by word overlap."""

    def __init__(self, name="recorder"):
        self.name, self.seen = name, []

    def score(self, groups):
        out = []
        for queries, passages in groups:
            self.seen.append(list(queries))
            out.append(np.array([[len(set(q.split()) & set(p.split())) for p in passages] for q in queries], float))
        return out


RECORD = {"query_id": "r1", "query": "wing lift", "pos": ["lift of a swept wing", "wing lift at high speed"],
          "neg": ["heat transfer in a slab", "heat of the boundary layer"],
          "candidates": ["heat transfer slab boundary", "swept wing at high speed", "slab heat"]}


def test_vote_uses_the_query_every_positive_and_the_negatives(tmp_path):
    recorder = Recorder()
    bm25 = BM25Member()
    report = vote([RECORD], [recorder, bm25], tmp_path / "t.jsonl")
    assert recorder.seen == [["wing lift"] + [augment("wing lift", c) for c in RECORD["candidates"]]]
    [out] = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert out["thought"] == "swept wing at high speed" and out["votes"]["winner"] == 1
    assert out["committee"] == ["recorder", "bm25"] and out["candidates"] == RECORD["candidates"]
    for name in ("recorder", "bm25"):
        member = out["votes"]["members"][name]
        assert set(member) == {"quality", "margin", "rank", "pos_ranks", "baseline"}
        assert len(member["quality"]) == 3 and len(member["pos_ranks"][0]) == 2
        assert member["rank"][1] == 1.0
    assert out["votes"]["members"]["bm25"]["pos_ranks"][0] == [3.0, 3.0]  # the negative-leaning thought
    assert report.written == 1 and report.winners[1] == 1
    assert "recorder" in report.summary() and "query alone" in report.summary()
    assert len(RecordFile(tmp_path / "t.jsonl", Stage.TRAINING)) == 1


def test_vote_resumes_and_refuses_another_committee(tmp_path):
    records = [dict(RECORD, query_id=f"r{i}") for i in range(5)]
    out = tmp_path / "t.jsonl"
    vote(records[:3], [Recorder()], out, method="soft")
    report = vote(iter(records), [Recorder()], out, method="soft")  # a one-shot iterator works too
    assert report.skipped == 3 and report.written == 2
    assert sorted(json.loads(line)["query_id"] for line in out.read_text().splitlines()) == [f"r{i}" for i in range(5)]
    with pytest.raises(ValueError, match="committee"):
        vote(records, [Recorder("other")], out, method="soft")
    with pytest.raises(ValueError, match="method"):
        vote(records, [Recorder()], out, method="hard")


def test_vote_rejects_records_it_cannot_judge(tmp_path):
    with pytest.raises(ValueError, match=r"record 1: field 'neg' is empty .*o1-embedder mine"):
        vote([dict(RECORD, neg=[])], [Recorder()], tmp_path / "t.jsonl")
    with pytest.raises(ValueError, match="missing field 'candidates'"):
        vote([{k: v for k, v in RECORD.items() if k != "candidates"}], [Recorder()], tmp_path / "t.jsonl")
    with pytest.raises(ValueError, match="distinct"):
        vote([RECORD], [Recorder(), Recorder()], tmp_path / "t.jsonl")


@pytest.mark.usefixtures("one_thread")
def test_dense_member_with_minilm_prefers_the_relevant_thought():
    [minilm, bm25] = load_committee()
    assert isinstance(minilm, DenseMember) and minilm.name == "all-MiniLM-L6-v2" and isinstance(bm25, BM25Member)
    [scores] = minilm.score([(["wing lift", "wing lift swept wing at high speed", "wing lift heat slab"],
                              RECORD["pos"] + RECORD["neg"])])
    assert scores.shape == (3, 4)
    j = judge_scores(scores, num_pos=2)
    assert j.rank[0] == 1.0
    with pytest.raises(ValueError, match="distinct"):
        load_committee(["bm25", "bm25"])
