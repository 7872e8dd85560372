"""Helpers shared by several test modules (test modules never import one another)."""

import json
import random

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from o1_embedder.data import document_text, load_cranfield
from o1_embedder.generation.decoding import left_pad


class PerRowSampler(LogitsProcessor):
    """Reference: each row samples from its own seeded generator (temperature, then top-p)."""

    def __init__(self, seeds, temperature, top_p):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p = TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)

    def __call__(self, input_ids, scores):
        probs = torch.softmax(self.top_p(input_ids, self.temperature(input_ids, scores.float())), dim=-1)
        choice = torch.cat([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(choice)), choice] = 0.0
        return out


def reference(lm, prompts, settings, pad_id, eos_id, suppress, seeds):
    """Thoughts from ``lm.generate`` over the whole left-padded batch (no shared prefill, no row dropping)."""
    ids, mask = left_pad(prompts, pad_id, "cpu")
    processors = LogitsProcessorList([PerRowSampler(seeds, settings.temperature, settings.top_p)]
                                     if settings.do_sample else [])
    out = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens, do_sample=False,
                      temperature=None, top_p=None, top_k=None, pad_token_id=pad_id, eos_token_id=eos_id,
                      suppress_tokens=suppress, logits_processor=processors)
    thoughts, finished = [], []
    for row in out[:, ids.shape[1]:].tolist():
        thoughts.append(row[:row.index(eos_id)] if eos_id in row else row)
        finished.append(eos_id in row)
    return thoughts, finished


def make_records(n=24, negatives=3, seed=0, with_scores=False):
    data = load_cranfield()
    rng = random.Random(seed)
    doc_ids = list(data.corpus)
    records = []
    for qid in data.judged_queries()[:n]:
        pos = [document_text(data.corpus[d]) for d, g in data.qrels[qid].items() if g > 0][:1]
        rec = {"query_id": qid, "query": data.queries[qid], "pos": pos,
               "neg": [document_text(data.corpus[d]) for d in rng.sample(doc_ids, negatives)],
               "thought": " ".join(pos[0].split()[:12])}
        if with_scores:
            rec["pos_scores"] = [1.0]
            rec["neg_scores"] = [0.1 * i for i in range(negatives)]
        records.append(rec)
    return records


def features_of(batch):
    """The feature groups of a collated batch, as Sentence-Transformers' trainer splits them (by column prefix)."""
    prefixes = [k[:-len("input_ids")] for k in batch if k.endswith("_input_ids")]
    return [{k[len(p):]: v for k, v in batch.items() if k.startswith(p)} for p in prefixes]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
