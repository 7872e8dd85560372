"""Where thinking pays: one model, its inference settings varied, scored on a whole BEIR collection.

    python examples/ablate_thinking.py MODEL [--dataset cranfield] [--out runs/ablate] [--variants NAME ...]

Variants (each against the same model's no-think run, with a paired test over queries):
thought length (32 / 64 / 128 new tokens, greedy), K and sampling (K=3 at temperature 0.1 and 0.7, top-p 0.9),
document length (128 / 256 / 512 tokens, no think), int8 dynamic quantisation (greedy, 64 tokens), bfloat16
weights (no think; greedy 32 tokens with query weight 0.5) and the
query's own embedding mixed in (``query_weight`` 0.5, greedy, 64 and 32 tokens). Every other variant uses
``query_weight`` 0 (the thoughts' embeddings only), whatever the model's saved setting.
The corpus is embedded once per model and document length (cached under --out).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from o1_embedder.evaluation import evaluate_bm25, evaluate_dense, write_report  # noqa: E402
from o1_embedder.evaluation.job import resolve_dataset  # noqa: E402
from o1_embedder.evaluation.significance import paired_comparisons  # noqa: E402
from o1_embedder.model.loading import default_model, load_model  # noqa: E402

GREEDY = {"do_sample": False}
VARIANTS = {
    "no think": (False, {**GREEDY, "max_new_tokens": 64}, 1, 256, False),
    "think greedy 32": (True, {**GREEDY, "max_new_tokens": 32}, 1, 256, False),
    "think greedy 64": (True, {**GREEDY, "max_new_tokens": 64}, 1, 256, False),
    "think greedy 128": (True, {**GREEDY, "max_new_tokens": 128}, 1, 256, False),
    "think K=3 t=0.1": (True, {"do_sample": True, "temperature": 0.1, "top_p": 0.9, "max_new_tokens": 64}, 3, 256,
                        False),
    "think K=3 t=0.7": (True, {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64}, 3, 256,
                        False),
    "no think, documents 128": (False, {**GREEDY, "max_new_tokens": 64}, 1, 128, False),
    "no think, documents 512": (False, {**GREEDY, "max_new_tokens": 64}, 1, 512, False),
    "int8 no think": (False, {**GREEDY, "max_new_tokens": 64}, 1, 256, "int8"),
    "int8 think greedy 64": (True, {**GREEDY, "max_new_tokens": 64}, 1, 256, "int8"),
    "think greedy 64, query weight 0.5": (True, {**GREEDY, "max_new_tokens": 64}, 1, 256, False),
    "think greedy 32, query weight 0.5": (True, {**GREEDY, "max_new_tokens": 32}, 1, 256, False),
    "bfloat16 no think": (False, {**GREEDY, "max_new_tokens": 64}, 1, 256, "bfloat16"),
    "bfloat16 think greedy 32, query weight 0.5": (True, {**GREEDY, "max_new_tokens": 32}, 1, 256, "bfloat16"),
}
QUERY_WEIGHT = {"think greedy 64, query weight 0.5": 0.5, "think greedy 32, query weight 0.5": 0.5,
                "bfloat16 think greedy 32, query weight 0.5": 0.5}


def comparison_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Each variant against the no-think run of its own precision (int8 vs int8 no think ...), no think vs BM25."""
    pairs = []
    for name in names:
        precision = next((p for p in ("int8", "bfloat16") if name.startswith(p + " ")), "")
        baseline = f"{precision} no think".strip()
        if name not in (baseline, "BM25"):
            pairs.append((name, baseline))
    return pairs + [(n, "BM25") for n in names if n.endswith("no think")]


def load(name: str):
    if name == "untrained":
        return default_model(trained=False)
    return load_model(name, dtype="float32")  # the bfloat16 variants cast a copy themselves


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder, 'o1-embedder' (the default) or 'untrained'")
    parser.add_argument("--dataset", default="cranfield")
    parser.add_argument("--out", default="runs/ablate")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--query-batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    data = resolve_dataset(args.dataset)
    out = Path(args.out)
    results = [evaluate_bm25(data)]
    models = {}  # one loaded model per precision
    for name in args.variants:
        think, generation, k, doc_tokens, precision = VARIANTS[name]
        if precision not in models:
            models[precision] = load(args.model)
            if precision == "int8":
                models[precision][0].quantize_int8()
            elif precision:
                models[precision].to(getattr(torch, precision))
        current = models[precision]
        current[0].configure(num_thoughts=k, query_weight=QUERY_WEIGHT.get(name, 0.0), **generation)
        current.max_seq_length = doc_tokens
        started = time.perf_counter()
        result = evaluate_dense(current, data, name=name, query_kwargs={"think": think}, cache_dir=out / "cache",
                                batch_size=16, query_batch_size=args.query_batch_size)
        results.append(result)
        print(f"{name}: nDCG@10={result['metrics']['ndcg@10']:.4f} ({time.perf_counter() - started:.0f}s, "
              f"{result['seconds_per_query']:.3f}s/query)", flush=True)
        write_report(results, out, f"{data.name}: {args.model}",
                     comparisons=paired_comparisons(results, comparison_pairs([r["name"] for r in results])))
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
