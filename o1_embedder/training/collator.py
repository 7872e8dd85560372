"""Batches for joint training, built with the model's own sequence formats.

Per batch the collator yields three feature groups, in the order the loss reads them:

* ``query_*``: ``prompt + thought + eos + <emb>`` (or ``prompt + <emb>`` when the row has no thought or
  its thought is dropped), with ``labels`` equal to the thought and eos ids at their positions and -100
  everywhere else (format tokens, query, ``<emb>``, padding);
* ``positive_*``: the positive passage in document format;
* ``negative_*``: ``num_negatives`` hard negatives per row, flattened (row-major);

and ``label``: teacher scores ``(batch, 1 + num_negatives)`` when the data has them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from o1_embedder.model.encoding import left_pad


@dataclass
class JointCollator:
    """Collate rows with columns query, positive, negatives, thought (and optionally teacher_scores).

    Args:
        module: the model's ``O1Embedder`` module (``model[0]``): its tokenizer and sequence builder.
        num_negatives: hard negatives per query (sampled from the row's list; with replacement when the
            row has fewer). 0 uses in-batch negatives only.
        thought_dropout: probability of training a query without its thought (so the model can also
            embed without thinking).
        max_thought_tokens: thought truncation (default: the model's ``max_new_tokens``).
        seed: seeds negative sampling and thought dropout. The random choices of a batch depend only on
            the seed and the batch's rows, so a run resumed from a checkpoint makes the same choices.
    """

    module: Any
    num_negatives: int = 7
    thought_dropout: float = 0.1
    max_thought_tokens: int | None = None
    seed: int = 0
    valid_label_columns: list[str] = field(default_factory=lambda: ["teacher_scores"])

    def __post_init__(self) -> None:
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {self.num_negatives}")
        if not 0.0 <= self.thought_dropout <= 1.0:
            raise ValueError(f"thought_dropout must be in [0, 1], got {self.thought_dropout}")
        if self.max_thought_tokens is None:
            self.max_thought_tokens = self.module.generation_settings.max_new_tokens
        self._rng = random.Random(self.seed)

    def _batch_rng(self, rows: list[dict]) -> random.Random:
        digest = hashlib.sha256(str(self.seed).encode())
        for row in rows:
            digest.update(b"\x1e" + row["query"].encode("utf-8", "surrogatepass") + b"\x1f"
                          + row["positive"].encode("utf-8", "surrogatepass"))
        return random.Random(digest.digest())

    def _negatives(self, row: dict) -> tuple[list[str], list[int]]:
        negatives = list(row.get("negatives") or [])
        if self.num_negatives == 0:
            return [], []
        if not negatives:
            raise ValueError(f"query {row['query'][:80]!r} has no negatives but num_negatives={self.num_negatives}: "
                             "mine some (o1-embedder mine) or set num_negatives=0")
        if len(negatives) >= self.num_negatives:
            picks = self._rng.sample(range(len(negatives)), self.num_negatives)
        else:
            picks = [self._rng.randrange(len(negatives)) for _ in range(self.num_negatives)]
        return [negatives[i] for i in picks], picks

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        builder = self.module.builder
        tokenizer = self.module.tokenizer
        pad_id = tokenizer.pad_token_id
        self._rng = self._batch_rng(rows)
        queries = [row["query"] for row in rows]
        prompts = builder.query_prompts(queries)
        keep = [bool(row.get("thought")) and self._rng.random() >= self.thought_dropout for row in rows]
        thoughts = [row["thought"] if k else "" for row, k in zip(rows, keep)]
        thought_ids = builder.thought_ids(thoughts, self.max_thought_tokens)
        sequences, targets = [], []
        for prompt, ids, k in zip(prompts, thought_ids, keep):
            if k:
                seq = builder.close_thought(prompt, ids)
                target = [-100] * len(prompt) + list(ids) + [builder.eos_id, -100]
            else:
                seq = prompt + [builder.emb_id]
                target = [-100] * len(seq)
            sequences.append(seq)
            targets.append(target)
        batch: dict[str, torch.Tensor] = {}
        batch["query_input_ids"], batch["query_attention_mask"] = left_pad(sequences, pad_id, "cpu")
        batch["query_labels"], _ = left_pad(targets, -100, "cpu")

        docs = builder.documents([row["positive"] for row in rows])
        batch["positive_input_ids"], batch["positive_attention_mask"] = left_pad(docs, pad_id, "cpu")
        picks_per_row = []
        if self.num_negatives:
            negatives = []
            for row in rows:
                texts, picks = self._negatives(row)
                negatives += texts
                picks_per_row.append(picks)
            neg = builder.documents(negatives)
            batch["negative_input_ids"], batch["negative_attention_mask"] = left_pad(neg, pad_id, "cpu")
        if all("teacher_scores" in row for row in rows):
            scores = [[row["teacher_scores"][0]] + [row["teacher_scores"][1 + i] for i in picks]
                      for row, picks in zip(rows, picks_per_row or [[] for _ in rows])]
            batch["label"] = torch.tensor(scores, dtype=torch.float32)
        return batch
