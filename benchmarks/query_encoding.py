"""Query-encoding benchmark on the embedded default (SmolLM2-135M-Instruct), all ratios from one run.

    python benchmarks/query_encoding.py [--queries 64] [--max-new-tokens 64] [--batch-size 16] [--docs 256]

1. one-pass (embedding read from generation's KV cache) vs two-pass (the reference approach: decode the
   thought, re-tokenise query + thought, re-encode the whole sequence); same thoughts, same seed;
2. cached vs uncached (the thought cache on a repeated call);
3. K=3 sampled thoughts vs K=1;
4. document throughput vs a plain Sentence-Transformers ``Transformer`` + ``Pooling("lasttoken")`` model on the
   same backbone and batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from o1_embedder import ThoughtCache, default_model  # noqa: E402
from o1_embedder.data.beir import cranfield_path  # noqa: E402
from o1_embedder.model.default import default_backbone_path  # noqa: E402
from o1_embedder.generation import decode  # noqa: E402
from o1_embedder.model.encoding import embed_sequences, think_and_embed  # noqa: E402


def read_jsonl(path, n):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def one_pass(module, queries, batch_size):
    """The library's path: generation, then ``<emb>`` read from generation's KV cache."""
    out = []
    for start in range(0, len(queries), batch_size):
        prompts = module.builder.query_prompts(queries[start:start + batch_size])
        out.append(think_and_embed(module.model, prompts, settings=module.generation_settings, **_ids(module)).embeddings)
    return torch.cat(out)


def two_pass(module, queries, batch_size):
    """The reference approach: generation, then a second forward pass over prompt + thought + eos + <emb>."""
    out = []
    ids = _ids(module)
    ids.pop("emb_id")
    for start in range(0, len(queries), batch_size):
        prompts = module.builder.query_prompts(queries[start:start + batch_size])
        thoughts = decode(module.model, prompts, settings=module.generation_settings, pad_id=ids["pad_id"],
                          eos_ids=[ids["eos_id"]], suppress_ids=ids["suppress_ids"],
                          row_seeds=list(range(len(prompts)))).token_ids
        seqs = [module.builder.close_thought(p, t) for p, t in zip(prompts, thoughts)]
        with torch.no_grad():
            out.append(embed_sequences(module.model, seqs, module.tokenizer.pad_token_id))
    return torch.cat(out)


def _ids(module):
    return {"pad_id": module.tokenizer.pad_token_id, "eos_id": module.builder.eos_id, "emb_id": module.builder.emb_id,
            "suppress_ids": module.special_token_ids}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--docs", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)

    data = cranfield_path()
    queries = read_jsonl(data / "queries.jsonl", args.queries)
    docs = read_jsonl(data / "corpus.jsonl", args.docs)
    greedy = {"do_sample": False, "max_new_tokens": args.max_new_tokens}
    model = default_model(num_thoughts=1, generation=greedy)
    module = model[0]
    module.thought_cache = None
    bs = args.batch_size
    print(f"backbone: {default_backbone_path()}  queries={len(queries)} docs={len(docs)} batch={bs} "
          f"max_new_tokens={args.max_new_tokens} torch threads={torch.get_num_threads()}")

    # 1. one pass vs two passes, greedy K=1 (identical thoughts in both), alternated to share machine noise
    one, t_one = timed(lambda: one_pass(module, queries, bs))
    two, t_two = timed(lambda: two_pass(module, queries, bs))
    _, t_one2 = timed(lambda: one_pass(module, queries, bs))
    _, t_two2 = timed(lambda: two_pass(module, queries, bs))
    t_one, t_two = t_one + t_one2, t_two + t_two2
    max_diff = (one - two).abs().max().item()
    cos = (one * two).sum(-1).min().item()

    # 2. cached vs uncached
    with tempfile.TemporaryDirectory() as tmp:
        module.thought_cache = ThoughtCache(os.path.join(tmp, "thoughts.sqlite"))
        _, t_fill = timed(lambda: model.encode_query(queries, batch_size=bs))
        _, t_cached = timed(lambda: model.encode_query(queries, batch_size=bs))
        module.thought_cache = None

    # 3. K=3 sampled vs K=1 sampled
    module.configure(num_thoughts=1, do_sample=True, temperature=0.1, top_p=0.9, seed=0)
    _, t_k1 = timed(lambda: model.encode_query(queries, batch_size=bs))
    module.configure(num_thoughts=3)
    _, t_k3 = timed(lambda: model.encode_query(queries, batch_size=bs))

    # 4. documents vs plain Transformer + Pooling("lasttoken")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    backbone = Transformer(str(default_backbone_path()), processor_kwargs={"model_max_length": module.max_document_tokens})
    if backbone.tokenizer.pad_token is None:
        backbone.tokenizer.pad_token = backbone.tokenizer.eos_token
    plain = SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension(), "lasttoken")])
    model.encode_document(docs[:bs], batch_size=bs)  # warm-up both
    plain.encode(docs[:bs], batch_size=bs)
    _, t_doc = timed(lambda: model.encode_document(docs, batch_size=bs))
    _, t_plain = timed(lambda: plain.encode(docs, batch_size=bs))

    rows = [
        ("one-pass vs two-pass query encoding (time ratio two/one)", t_two / t_one,
         f"{t_one:.1f}s vs {t_two:.1f}s (2 runs each); max |diff|={max_diff:.2e}, min cos={cos:.6f}"),
        ("cached vs uncached (speed-up uncached/cached)", t_fill / t_cached, f"{t_fill:.1f}s vs {t_cached:.2f}s"),
        ("K=3 vs K=1 sampled thoughts (time ratio K3/K1)", t_k3 / t_k1, f"{t_k1:.1f}s vs {t_k3:.1f}s"),
        ("documents: o1-embedder vs Transformer+Pooling(lasttoken) (throughput ratio)", t_plain / t_doc,
         f"{len(docs) / t_doc:.1f} vs {len(docs) / t_plain:.1f} docs/s"),
    ]
    print("\n| measure | ratio | detail |\n|---|---|---|")
    for name, ratio, detail in rows:
        print(f"| {name} | {ratio:.2f} | {detail} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
