"""Hard negatives for records that have none, with sentence-transformers' ``mine_hard_negatives``.

Defaults follow NV-Retriever's best setting as recommended by sentence-transformers ("TopK-PercPos"):
the top-ranked passages that are not positives, skipping any that scores above 95% of the query's
weakest positive (``relative_margin=0.05``), which keeps most unjudged true positives out. The
candidate passages are the corpus (when the source is a BEIR folder, or ``corpus`` is given) plus
every positive of every record. A record keeps the order of the mined negatives (hardest first) and
gets ``mining: {"model", "scores"}`` (the miner's scores of its negatives, for inspection; they are not
``neg_scores``, which the trainer would read as teacher scores).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["MiningResult", "mine_negatives"]

logger = logging.getLogger(__name__)


@dataclass
class MiningResult:
    """Records in input order; ``failed`` maps ids of records for which no negative was found to a reason
    (they are not in ``records``)."""

    records: list[dict]
    mined: int = 0           # records that got mined negatives
    kept: int = 0            # records that already had negatives and were passed through
    short: int = 0           # mined records with fewer negatives than asked for
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self, num_negatives: int) -> str:
        text = (f"{len(self.records)} records: {self.mined} mined, {self.kept} already had negatives; "
                f"{self.short} got fewer than {num_negatives} negatives")
        if self.failed:
            text += f"; {len(self.failed)} got none and are left out"
        return text


def mine_negatives(records: Iterable[dict], model, *, corpus: Sequence[str] | None = None, num_negatives: int = 15,
                   range_min: int = 0, range_max: int | None = None, relative_margin: float | None = 0.05,
                   absolute_margin: float | None = None, max_score: float | None = None,
                   sampling_strategy: str = "top", batch_size: int = 64, use_faiss: bool | None = None,
                   replace: bool = False, model_name: str | None = None) -> MiningResult:
    """Add ``neg`` to every record without negatives (all records with ``replace=True``).

    ``model`` is a ``SentenceTransformer``; the other arguments are those of
    ``sentence_transformers.util.mine_hard_negatives``. ``use_faiss`` defaults to ``True`` for more than
    100,000 candidate passages. Records whose query finds no valid negative are reported in
    :attr:`MiningResult.failed`, never written with an empty ``neg``.
    """
    try:
        from datasets import Dataset
    except ImportError as err:
        raise ModuleNotFoundError("hard-negative mining needs the 'datasets' package: pip install datasets") from err
    from sentence_transformers.util import mine_hard_negatives

    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if relative_margin is not None and not 0 <= relative_margin < 1:  # NaN fails too; 1 or more drops every candidate
        raise ValueError(f"relative_margin must be in [0, 1), got {relative_margin}")
    for name, value in (("absolute_margin", absolute_margin), ("max_score", max_score)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    records = list(records)
    todo = [r for r in records if replace or not r.get("neg")]
    result = MiningResult(records=[], kept=len(records) - len(todo))
    if not todo:
        result.records = records
        return result

    queries = [r["query"] for r in todo for _ in r["pos"]]
    positives = [p for r in todo for p in r["pos"]]
    passages = list(dict.fromkeys([*(corpus or []), *(p for r in records for p in r["pos"])]))
    if use_faiss is None:
        use_faiss = len(passages) > 100_000
    mined = mine_hard_negatives(
        Dataset.from_dict({"query": queries, "positive": positives}), model, anchor_column_name="query",
        positive_column_name="positive", corpus=passages, range_min=range_min, range_max=range_max,
        relative_margin=relative_margin, absolute_margin=absolute_margin, max_score=max_score,
        num_negatives=num_negatives, sampling_strategy=sampling_strategy, output_format="labeled-list",
        output_scores=True, batch_size=batch_size, use_faiss=use_faiss, verbose=False,
    )
    # labeled-list rows: (query, [positive, negative_1, ...], [score, ...]), one per (query, positive);
    # the negatives of a query are the same in each of its rows.
    negatives: dict[str, tuple[list[str], list[float]]] = {}
    for query, docs, scores in zip(mined["query"], mined["positive"], mined["scores"]):
        negatives.setdefault(query, (list(docs[1:]), [float(s) for s in scores[1:]]))

    name = model_name or getattr(getattr(model, "model_card_data", None), "base_model", None) or type(model).__name__
    todo_ids = {id(r) for r in todo}
    for record in records:
        if id(record) not in todo_ids:
            result.records.append(record)
            continue
        found, scores = negatives.get(record["query"], ([], []))
        positives_here = set(record["pos"])
        kept = [(n, s) for n, s in zip(found, scores) if n not in positives_here]
        if not kept:
            result.failed[record["query_id"]] = ("no negative found (raise --range-max, lower --relative-margin, "
                                                 "or give a --corpus)")
            continue
        result.mined += 1
        result.short += len(kept) < num_negatives
        result.records.append({**record, "neg": [n for n, _ in kept],
                               "mining": {"model": name, "scores": [round(s, 4) for _, s in kept]}})
    return result
