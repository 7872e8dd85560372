"""Evaluation overhead: the library's ``evaluate_dense`` vs calling sentence-transformers + faiss + pytrec_eval
directly, on the same model and data (no corpus cache), as time ratios from one run.

    python benchmarks/eval_overhead.py [--queries 100] [--docs 500] [--repeats 2] [--o1]

``--o1`` adds the embedded default o1-embedder model (queries without thinking, documents <= 128 tokens).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from o1_embedder.data import document_text, load_cranfield  # noqa: E402
from o1_embedder.evaluation import evaluate_dense  # noqa: E402
from o1_embedder.model.loading import load_comparison_model  # noqa: E402


def direct(model, data, query_kwargs, batch_size):
    """What a user would write by hand: encode, faiss IndexFlatIP, pytrec_eval."""
    import faiss
    import pytrec_eval

    doc_ids = list(data.corpus)
    doc_emb = model.encode_document([document_text(data.corpus[d]) for d in doc_ids], batch_size=batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True)
    query_ids = list(data.queries)
    query_emb = model.encode_query([data.queries[q] for q in query_ids], batch_size=batch_size,
                                   normalize_embeddings=True, convert_to_numpy=True, **query_kwargs)
    index = faiss.IndexFlatIP(doc_emb.shape[1])
    index.add(np.ascontiguousarray(doc_emb, dtype=np.float32))
    scores, idx = index.search(np.ascontiguousarray(query_emb, dtype=np.float32), min(100, len(doc_ids)))
    run = {q: {doc_ids[i]: float(s) for i, s in zip(idx[r], scores[r])} for r, q in enumerate(query_ids)}
    evaluator = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate(run)
    return float(np.mean([v["ndcg_cut_10"] for v in per_query.values()]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--o1", action="store_true", help="also the embedded default o1-embedder (no thinking)")
    args = parser.parse_args(argv)

    data, description = load_cranfield().subset(args.queries, args.docs, seed=0)
    print(f"data: {description}; batch size {args.batch_size}; {args.repeats} alternating repeats")
    models = [("all-MiniLM-L6-v2", load_comparison_model("all-MiniLM-L6-v2"), {})]
    if args.o1:
        from o1_embedder import default_model

        o1 = default_model()
        o1.max_seq_length = 128
        models.append(("o1-embedder default (no think)", o1, {"think": False}))

    print("\n| model | library s | direct s | ratio library/direct | nDCG@10 library | nDCG@10 direct |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model, kwargs in models:
        model.encode_document(["warm up"])
        lib_t = dir_t = 0.0
        for _ in range(args.repeats):  # alternate so machine noise hits both
            start = time.perf_counter()
            lib = evaluate_dense(model, data, name=name, query_kwargs=kwargs, batch_size=args.batch_size)
            lib_t += time.perf_counter() - start
            start = time.perf_counter()
            ndcg_direct = direct(model, data, kwargs, args.batch_size)
            dir_t += time.perf_counter() - start
        print(f"| {name} | {lib_t:.1f} | {dir_t:.1f} | {lib_t / dir_t:.3f} | {lib['metrics']['ndcg@10']:.4f} "
              f"| {ndcg_direct:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
