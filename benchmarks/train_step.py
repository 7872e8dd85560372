"""Training-step benchmark: the shared single pass vs separate passes, time per step and peak memory.

    python benchmarks/train_step.py [--batch-size 4] [--negatives 3] [--steps 3] [--tiny] [--bf16]

* shared (this library): each query+thought sequence is encoded once; its ``<emb>`` state is the query
  embedding and the LM head runs only at the thought positions;
* separate (the reference recipe): one causal-LM pass with the LM head over every position for the
  generation loss, plus a second pass over the same sequence for the embedding.

Both variants run the same batches (embedded default SmolLM2-135M unless ``--tiny``) with full
fine-tuning and SGD, each in its own child process so peak memory (RSS on CPU, allocator peak on CUDA) is
its own (on the CPU: RSS sampled during the steps, above the RSS before them). Printed as ratios
separate/shared. With ``--bf16`` the shared step also runs under bfloat16 autocast (what ``TrainConfig(bf16=True)``
/ ``--bf16`` does: float32 weights, bfloat16 products), printed as the ratio float32/bfloat16.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak, or RSS sampled every 2 ms on the CPU."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.peak_mb = 0.0

    def __enter__(self):
        import threading

        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
            return self
        self.base = _rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak_mb = max(self.peak_mb, _rss_mb() - self.base)
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20 - self.base
        else:
            self._stop.set()
            self._thread.join()


def _model(tiny: bool):
    from o1_embedder import build_model, default_model

    settings = dict(max_query_tokens=32, max_document_tokens=128, generation={"max_new_tokens": 64})
    if tiny:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        import tempfile
        from pathlib import Path

        from conftest import make_backbone

        return build_model(str(make_backbone(Path(tempfile.mkdtemp()), "llama")), **settings)
    return default_model(**settings)


def _batch(module, batch_size: int, negatives: int):
    from o1_embedder.data import document_text, load_cranfield
    from o1_embedder.training import JointCollator

    data = load_cranfield()
    doc_ids = list(data.corpus)
    rows = []
    for i, qid in enumerate(data.judged_queries()[:batch_size]):
        pos = next(d for d, g in data.qrels[qid].items() if g > 0)
        rows.append({"query": data.queries[qid], "positive": document_text(data.corpus[pos]),
                     "negatives": [document_text(data.corpus[doc_ids[(7 * i + j) % len(doc_ids)]])
                                   for j in range(negatives)],
                     "thought": " ".join(document_text(data.corpus[pos]).split()[:48])})
    return JointCollator(module, num_negatives=negatives, thought_dropout=0.0)(rows)


def _separate_loss(model, batch):
    """Reference recipe: full-vocabulary LM pass for the thought loss + a separate embedding pass."""
    import torch
    import torch.nn.functional as F

    from o1_embedder.model.encoding import last_hidden, position_ids
    from o1_embedder.training.loss import JointLoss

    weights = JointLoss(model)
    lm = model[0].model
    ids, mask, labels = batch["query_input_ids"], batch["query_attention_mask"], batch["query_labels"]
    logits = lm(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits  # every position
    generation = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
    q = F.normalize(last_hidden(lm, ids, mask).float(), dim=-1)  # second pass for the embedding
    docs = torch.cat([model(group)["sentence_embedding"] for group in _feature_groups(batch)[1:]])
    contrastive = F.cross_entropy(q @ docs.T / weights.temperature, torch.arange(q.shape[0]))
    return weights.contrastive_weight * contrastive + weights.generation_weight * generation


def _feature_groups(batch):
    """The collated batch split by column prefix (query, positive, negative_1, ...), as the trainer splits it."""
    prefixes = [k[:-len("input_ids")] for k in batch if k.endswith("_input_ids")]
    return [{k[len(p):]: v for k, v in batch.items() if k.startswith(p)} for p in prefixes]


def _shared_loss(model, batch):
    from o1_embedder.training.loss import JointLoss

    return sum(JointLoss(model)(_feature_groups(batch)).values())


def _child(variant: str, args, queue) -> None:
    import torch

    torch.manual_seed(0)
    model = _model(args.tiny)
    model.requires_grad_(True)  # full fine-tuning (the trained default's merged weights come frozen)
    model.train()
    batch = _batch(model[0], args.batch_size, args.negatives)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    step = _separate_loss if variant == "separate" else _shared_loss
    cuda = torch.cuda.is_available()
    precision = torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=variant == "shared-bf16")

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        with precision:
            loss = step(model, batch)
        loss.backward()
        optimizer.step()
        return loss.item()

    with PeakMemory(cuda) as memory:  # from before the first step: gradients + activations + logits
        one_step()  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = one_step()
        seconds = (time.perf_counter() - start) / args.steps
    queue.put({"variant": variant, "seconds": seconds, "peak_mb": memory.peak_mb, "loss": loss,
               "tokens": int(batch["query_attention_mask"].sum())})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    parser.add_argument("--bf16", action="store_true", help="also time the shared step under bfloat16 autocast")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    results = {}
    for variant in ("shared", "separate") + (("shared-bf16",) if args.bf16 else ()):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(variant, args, queue))
        proc.start()
        results[variant] = queue.get()
        proc.join()
    s, r = results["shared"], results["separate"]
    print(f"batch {args.batch_size} queries ({s['tokens']} query+thought tokens), {args.negatives} negatives each, "
          f"{args.steps} timed steps, {'tiny model' if args.tiny else 'SmolLM2-135M'}")
    print("\n| measure | shared | separate | ratio separate/shared |\n|---|---:|---:|---:|")
    print(f"| seconds per step | {s['seconds']:.2f} | {r['seconds']:.2f} | {r['seconds'] / s['seconds']:.2f} |")
    print(f"| peak memory above model (MB) | {s['peak_mb']:.0f} | {r['peak_mb']:.0f} | "
          f"{(r['peak_mb'] / s['peak_mb']) if s['peak_mb'] else float('nan'):.2f} |")
    print(f"| loss | {s['loss']:.4f} | {r['loss']:.4f} | |")
    if args.bf16:
        b = results["shared-bf16"]
        print("\n| shared step | float32 | bfloat16 autocast | ratio float32/bfloat16 |\n|---|---:|---:|---:|")
        print(f"| seconds per step | {s['seconds']:.2f} | {b['seconds']:.2f} | {s['seconds'] / b['seconds']:.2f} |")
        print(f"| peak memory above model (MB) | {s['peak_mb']:.0f} | {b['peak_mb']:.0f} | "
              f"{(s['peak_mb'] / b['peak_mb']) if b['peak_mb'] else float('nan'):.2f} |")
        print(f"| loss | {s['loss']:.4f} | {b['loss']:.4f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
