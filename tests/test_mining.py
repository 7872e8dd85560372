"""Hard-negative mining with sentence-transformers' mine_hard_negatives (all-MiniLM-L6-v2, offline)."""

from __future__ import annotations

import pytest
from synth_helpers import one_thread  # noqa: F401  (fixture)

from o1_embedder.model.loading import load_comparison_model
from o1_embedder.synthesis.mine import mine_negatives

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = ["the lift of a swept wing at high speed", "heat transfer in a composite slab", "drag of a slender body",
          "boundary layer transition on a flat plate", "flutter of a heated wing panel", "shock waves in nozzles",
          "skin friction in turbulent flow", "buckling of thin cylindrical shells", "wing lift in a slipstream",
          "conduction of heat through layered walls"]


@pytest.fixture(scope="module")
def minilm():
    return load_comparison_model("all-MiniLM-L6-v2")


def test_negatives_are_mined_from_the_corpus_never_positives(minilm):
    records = [
        {"query_id": "a", "query": "lift of wings", "pos": [CORPUS[0], CORPUS[8]]},
        {"query_id": "b", "query": "heat conduction in slabs", "pos": [CORPUS[1]]},
        {"query_id": "c", "query": "kept as is", "pos": ["x"], "neg": ["already here"]},
    ]
    result = mine_negatives(records, minilm, corpus=CORPUS, num_negatives=3, relative_margin=None,
                            model_name="all-MiniLM-L6-v2")
    assert [r["query_id"] for r in result.records] == ["a", "b", "c"]
    assert result.mined == 2 and result.kept == 1 and not result.failed and result.short == 0
    a, b, c = result.records
    assert c == records[2]
    for record in (a, b):
        assert len(record["neg"]) == 3 and not set(record["neg"]) & set(record["pos"])
        assert set(record["neg"]) <= set(CORPUS) | {"x"}  # candidates: the corpus and every positive
        assert record["mining"]["model"] == "all-MiniLM-L6-v2" and len(record["mining"]["scores"]) == 3
        assert record["mining"]["scores"] == sorted(record["mining"]["scores"], reverse=True)  # hardest first
    assert "conduction of heat through layered walls" == b["neg"][0]  # the closest non-positive
    assert records[0].get("neg") is None  # the input is not modified


def test_records_without_any_candidate_are_reported_not_written(minilm):
    records = [{"query_id": "only", "query": "lift", "pos": ["the only passage"]}]
    result = mine_negatives(records, minilm, corpus=[], num_negatives=2)
    assert result.records == [] and list(result.failed) == ["only"]
    assert "no negative found" in result.failed["only"]
    assert "got none and are left out" in result.summary(2)


def test_replace_mines_again(minilm):
    records = [{"query_id": "a", "query": "lift of wings", "pos": [CORPUS[0]], "neg": ["old"]}]
    result = mine_negatives(records, minilm, corpus=CORPUS, num_negatives=2, replace=True, relative_margin=None)
    assert result.mined == 1 and "old" not in result.records[0]["neg"]
