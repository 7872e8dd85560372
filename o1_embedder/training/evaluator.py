"""Held-out evaluation during training: Sentence-Transformers' ``InformationRetrievalEvaluator`` on records."""

from __future__ import annotations

import os

from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

from o1_embedder.data.records import RecordFile, Stage


class HeldOutEvaluator(InformationRetrievalEvaluator):
    """nDCG@10 / MRR@10 / Recall@k of held-out records; queries are embedded without thinking by default
    (generating thoughts at every evaluation would cost more than the training steps between them)."""

    def __init__(self, *args, think: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.think = think

    def embed_inputs(self, model, sentences, encode_fn_name=None, prompt_name=None, prompt=None, **kwargs):
        if encode_fn_name == "query":
            kwargs["think"] = self.think
        return super().embed_inputs(model, sentences, encode_fn_name=encode_fn_name, prompt_name=prompt_name,
                                    prompt=prompt, **kwargs)


def heldout_evaluator(path: str | os.PathLike, name: str = "heldout", think: bool = False,
                      batch_size: int = 16) -> HeldOutEvaluator:
    """An evaluator over a record file: each record's query against every passage of the file (all positives
    and negatives); its positives are the relevant ones. The file is validated like training data."""
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    ids: dict[str, str] = {}
    for record in RecordFile(path, Stage.BASE):
        qid = record["query_id"]
        queries[qid] = record["query"]
        for i, text in enumerate(record["pos"] + record.get("neg", [])):
            doc_id = ids.setdefault(text, f"d{len(ids)}")
            corpus[doc_id] = text
            if i < len(record["pos"]):
                relevant.setdefault(qid, set()).add(doc_id)
    return HeldOutEvaluator(queries, corpus, relevant, name=name, think=think, batch_size=batch_size,
                            show_progress_bar=False)
