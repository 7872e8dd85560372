"""Batches for joint training, built with the model's own sequence formats, from Sentence-Transformers columns.

Columns are read as Sentence-Transformers reads them, by position: the first text column is the query
(``anchor``), the second the positive, every further text column a hard negative (``negative`` or
``negative_1 ... negative_n``); a column holding a *list* of negatives (``negatives``, as
:func:`~o1_embedder.training.data.records_to_dataset` makes) is sampled ``num_negatives`` per row. A
``thought`` column (by name) holds the query's thought; a ``teacher_scores`` / ``label`` / ``score`` column
holds teacher scores of ``[positive, negatives...]``.

Per batch the collator yields feature groups in the order the loss reads them:

* ``query_*``: ``prompt + thought + eos + <emb>`` (or ``prompt + <emb>`` when the row has no thought or
  its thought is dropped), with ``labels`` equal to the thought and eos ids at their positions and -100
  everywhere else (format tokens, query, ``<emb>``, padding);
* ``positive_*``: the positive passage in document format;
* ``negative_1_*`` ... ``negative_n_*``: the j-th hard negative of every row, in document format;

and ``label``: teacher scores ``(batch, 1 + n)`` when the data has them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from o1_embedder.model.encoding import left_pad

THOUGHT_COLUMN = "thought"
LIST_NEGATIVES_COLUMN = "negatives"
LABEL_COLUMNS = ("teacher_scores", "label", "labels", "score", "scores")
SKIPPED_COLUMNS = ("dataset_name", "query_id")


@dataclass
class JointCollator:
    """Collate rows of query, positive, negatives and (optionally) thought and teacher scores.

    Args:
        module: the model's ``O1Embedder`` module (``model[0]``): its tokenizer and sequence builder.
        num_negatives: hard negatives per query taken from a list column (sampled; with replacement when a
            row has fewer). 0 uses in-batch negatives only. Negatives given as separate columns are all used.
        thought_dropout: probability of training a query without its thought (so the model can also
            embed without thinking).
        max_thought_tokens: thought truncation (default: the model's ``max_new_tokens``).
        seed: seeds negative sampling and thought dropout. The random choices of a batch depend only on
            the seed and the batch's rows, so a run resumed from a checkpoint makes the same choices.
        teacher_table: a :class:`~o1_embedder.training.teacher_table.TeacherTable`: the batch's ``label`` is then
            every query's teacher scores against every passage of the batch, ``(batch, batch x (1 + n))`` in the
            order the loss embeds them (the positives, then the first negative of every row, ...), in place of
            each row's own scores (in-batch distillation).
    """

    module: Any
    num_negatives: int = 7
    thought_dropout: float = 0.1
    max_thought_tokens: int | None = None
    seed: int = 0
    teacher_table: Any = None
    valid_label_columns: list[str] = field(default_factory=lambda: list(LABEL_COLUMNS))

    def __post_init__(self) -> None:
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {self.num_negatives}")
        if not 0.0 <= self.thought_dropout <= 1.0:
            raise ValueError(f"thought_dropout must be in [0, 1], got {self.thought_dropout}")
        if self.max_thought_tokens is None:
            self.max_thought_tokens = self.module.generation_settings.max_new_tokens

    # ------------------------------------------------------------------------------------- columns
    @staticmethod
    def columns(row: dict) -> tuple[list[str], str | None]:
        """``(text columns in order, label column)`` of a row: query, positive, negatives... by position."""
        label = next((c for c in row if c in LABEL_COLUMNS), None)
        texts = [c for c in row if c not in LABEL_COLUMNS and c != THOUGHT_COLUMN and c not in SKIPPED_COLUMNS]
        if len(texts) < 2:
            raise ValueError(f"JointCollator needs a query column and a positive column (anchor, positive, ...); "
                             f"got columns {list(row)}")
        return texts, label

    def _rng(self, rows: list[dict], query: str, positive: str) -> random.Random:
        digest = hashlib.sha256(str(self.seed).encode())
        for row in rows:
            digest.update(b"\x1e" + str(row[query]).encode("utf-8", "surrogatepass") + b"\x1f"
                          + str(row[positive]).encode("utf-8", "surrogatepass"))
        return random.Random(digest.digest())

    def _negatives(self, rows: list[dict], columns: list[str], rng: random.Random
                   ) -> tuple[list[list[str]], list[list[int]]]:
        """Per row its negatives and their indices (for teacher scores), from string columns or a list column."""
        texts, picks = [], []
        for number, row in enumerate(rows):
            listed = [c for c in columns if isinstance(row[c], (list, tuple))]
            strings = [c for c in columns if not isinstance(row[c], (list, tuple))]
            if listed and strings:
                raise TypeError(f"row {number}: negatives must be either string columns or one list column, "
                                f"got lists in {listed} and strings in {strings}")
            if any(c == LIST_NEGATIVES_COLUMN for c in strings):
                raise TypeError(f"row {number}: column 'negatives' must be a list of strings, got a "
                                f"{type(row[LIST_NEGATIVES_COLUMN]).__name__} (one negative goes in a "
                                f"'negative' column)")
            for c in strings:
                if not isinstance(row[c], str):
                    raise TypeError(f"row {number}: column {c!r} must be a string, got {type(row[c]).__name__}")
            if strings:
                texts.append([row[c] for c in strings])
                picks.append(list(range(len(strings))))
                continue
            pool = list(row[listed[0]]) if listed else []
            for i, item in enumerate(pool):
                if not isinstance(item, str):
                    raise TypeError(f"row {number}: {listed[0]}[{i}] must be a string, got {type(item).__name__}")
            if self.num_negatives == 0:
                texts.append([])
                picks.append([])
                continue
            if not pool:
                raise ValueError(f"row {number} has no negatives but num_negatives={self.num_negatives}: mine some "
                                 f"(o1-embedder mine) or set num_negatives=0")
            if len(pool) >= self.num_negatives:
                chosen = rng.sample(range(len(pool)), self.num_negatives)
            else:
                chosen = [rng.randrange(len(pool)) for _ in range(self.num_negatives)]
            texts.append([pool[i] for i in chosen])
            picks.append(chosen)
        if len({len(t) for t in texts}) > 1:
            raise ValueError(f"rows have different numbers of negatives ({sorted({len(t) for t in texts})}); every "
                             f"row of a batch needs the same number")
        return texts, picks

    # ------------------------------------------------------------------------------------- batches
    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("an empty batch")
        module = self.module
        builder = module.builder
        pad_id = module.tokenizer.pad_token_id
        columns, label_column = self.columns(rows[0])
        query_column, positive_column, negative_columns = columns[0], columns[1], columns[2:]
        for number, row in enumerate(rows):
            for c in (query_column, positive_column):
                if not isinstance(row.get(c), str):
                    raise TypeError(f"row {number}: column {c!r} must be a string, got {type(row.get(c)).__name__}")
            thought = row.get(THOUGHT_COLUMN)
            if thought is not None and not isinstance(thought, str):
                raise TypeError(f"row {number}: column 'thought' must be a string, got {type(thought).__name__}")
        rng = self._rng(rows, query_column, positive_column)

        prompts = builder.query_prompts([row[query_column] for row in rows])
        keep = [bool(row.get(THOUGHT_COLUMN)) and rng.random() >= self.thought_dropout for row in rows]
        thought_ids = builder.thought_ids([row[THOUGHT_COLUMN] if k else "" for row, k in zip(rows, keep)],
                                          self.max_thought_tokens)
        sequences, targets = [], []
        for prompt, ids, k in zip(prompts, thought_ids, keep):
            if k:
                sequences.append(builder.close_thought(prompt, ids))
                targets.append([-100] * len(prompt) + list(ids) + [builder.eos_id, -100])
            else:
                sequences.append(prompt + [builder.emb_id])
                targets.append([-100] * (len(prompt) + 1))
        batch: dict[str, torch.Tensor] = {}
        batch["query_input_ids"], batch["query_attention_mask"] = left_pad(sequences, pad_id, "cpu")
        batch["query_labels"], _ = left_pad(targets, -100, "cpu")

        docs = builder.documents([row[positive_column] for row in rows])
        batch["positive_input_ids"], batch["positive_attention_mask"] = left_pad(docs, pad_id, "cpu")
        negatives, picks = self._negatives(rows, negative_columns, rng) if negative_columns else ([[]] * len(rows),
                                                                                                  [[]] * len(rows))
        for j in range(len(negatives[0])):
            ids, mask = left_pad(builder.documents([row_negatives[j] for row_negatives in negatives]), pad_id, "cpu")
            batch[f"negative_{j + 1}_input_ids"], batch[f"negative_{j + 1}_attention_mask"] = ids, mask
        if self.teacher_table is not None:
            passages = [row[positive_column] for row in rows]
            for j in range(len(negatives[0])):
                passages += [row_negatives[j] for row_negatives in negatives]
            batch["label"] = self.teacher_table.lookup([row[query_column] for row in rows], passages)
        elif label_column is not None:
            scores = []
            for number, (row, chosen) in enumerate(zip(rows, picks)):
                values = row[label_column]
                if not isinstance(values, (list, tuple)) or len(values) < 1 + (max(chosen) + 1 if chosen else 0):
                    raise ValueError(f"row {number}: column {label_column!r} needs one teacher score for the "
                                     f"positive and one per negative")
                scores.append([float(values[0])] + [float(values[1 + i]) for i in chosen])
            batch["label"] = torch.tensor(scores, dtype=torch.float32)
            if not torch.isfinite(batch["label"]).all():
                raise ValueError(f"column {label_column!r} holds a non-finite teacher score")
        return batch
