"""Query-encoding benchmark on the embedded default (SmolLM2-135M-Instruct), all ratios from one run.

    python benchmarks/query_encoding.py [--queries 64] [--max-new-tokens 32] [--batch-size 64] [--docs 256]
        [--int8] [--bf16] [--cost-only]

0. the cost of thinking at the main job's settings (greedy, K=1, 32 new tokens): seconds per query with and
   without thinking, their ratio next to the FLOP-based floor for the same token counts (a thinking query
   processes prompt + thought + eos + <emb> tokens, a plain one prompt + <emb>; the LM head runs for every
   generated token), and tokens per second in prefill (no-think queries) vs in decoding;
1. one-pass (embedding read from generation's KV cache) vs two-pass (the reference approach: decode the
   thought, re-tokenise query + thought, re-encode the whole sequence); same thoughts, same seed;
2. cached vs uncached (the thought cache on a repeated call);
3. K=3 sampled thoughts vs K=1;
4. document throughput vs a plain Sentence-Transformers ``Transformer`` + ``Pooling("lasttoken")`` model on the
   same backbone and batch size;
5. with ``--int8``: the same think / no-think / document times with int8 dynamic quantisation of the linear
   layers, and how far its query embeddings move (cosine to the float ones);
6. with ``--bf16``: the same with the weights in bfloat16 (fast on CPUs with AMX or AVX512-BF16);
5 and 6 end with section 0's rows for the converted copy. ``--cost-only`` skips sections 1-4.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from o1_embedder import ThoughtCache, default_model  # noqa: E402
from o1_embedder.data.beir import cranfield_path  # noqa: E402
from o1_embedder.generation import decode  # noqa: E402
from o1_embedder.model.default import default_backbone_path  # noqa: E402
from o1_embedder.model.encoding import embed_sequences, think_and_embed  # noqa: E402


def read_jsonl(path, n):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def alternated(*fns, runs=2):
    """Each function's first output and its total time over ``runs`` runs, taken in turn (a, b, a, b) so that
    machine noise falls on every side of a ratio."""
    outs, totals = [None] * len(fns), [0.0] * len(fns)
    for run in range(runs):
        for i, fn in enumerate(fns):
            out, seconds = timed(fn)
            totals[i] += seconds
            if run == 0:
                outs[i] = out
    return outs, totals


def one_pass(module, queries, batch_size):
    """The library's path: generation, then ``<emb>`` read from generation's KV cache."""
    out = []
    for start in range(0, len(queries), batch_size):
        prompts = module.builder.query_prompts(queries[start:start + batch_size])
        result = think_and_embed(module.model, prompts, settings=module.generation_settings, **_ids(module))
        out.append(result.embeddings)
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


def flops_per_token(module) -> tuple[float, float]:
    """(FLOPs of one token through the decoder, FLOPs of the LM head for one token): 2 x weights touched."""
    lm = module.model
    head = lm.get_output_embeddings().weight.numel()
    body = sum(p.numel() for n, p in decoder_params(lm))
    return 2.0 * body, 2.0 * head


def decoder_params(lm):
    """Weights a token passes through in the decoder (not the embedding lookup)."""
    embed = lm.get_input_embeddings().weight
    return [(n, p) for n, p in lm.get_decoder().named_parameters() if p.data_ptr() != embed.data_ptr()]


def thinking_cost(model, queries, bs):
    """Think vs no-think seconds per query at greedy K=1, next to the FLOP floor of the same token counts."""
    module = model[0]
    prompts = module.builder.query_prompts(queries)
    model.encode_query(queries[:bs], batch_size=bs, think=False)  # warm-up
    runs = 2
    before = module.stats["generated_tokens"]
    _, (t_think, t_plain) = alternated(lambda: model.encode_query(queries, batch_size=bs),
                                       lambda: model.encode_query(queries, batch_size=bs, think=False), runs=runs)
    generated = (module.stats["generated_tokens"] - before) // runs
    t_think, t_plain = t_think / runs, t_plain / runs
    body, head = flops_per_token(module)
    prompt_tokens = sum(len(p) for p in prompts)
    plain_flops = body * (prompt_tokens + len(queries))
    # thinking: prompt prefill, one decode step per generated token (+ the LM head), then eos and <emb>
    think_flops = body * (prompt_tokens + generated + 2 * len(queries)) + head * (generated + len(queries))
    prefill_rate = (prompt_tokens + len(queries)) / t_plain
    decode_rate = generated / max(t_think - t_plain, 1e-9)
    n = len(queries)
    return [
        ("think vs no-think per query, greedy K=1 (time ratio)", t_think / t_plain,
         f"{t_think / n:.3f}s vs {t_plain / n:.3f}s per query; FLOP floor ratio {think_flops / plain_flops:.2f} "
         f"({generated / n:.1f} generated tokens per query)"),
        ("decode vs prefill tokens per second (ratio decode/prefill)", decode_rate / prefill_rate,
         f"{decode_rate:.0f} vs {prefill_rate:.0f} tokens/s at batch {bs}"),
    ]


def converted_rows(model, queries, docs, bs, name, convert):
    """Sections 5 and 6: float32 vs a converted copy (int8 or bfloat16), same queries; float32 re-measured; then the
    converted copy's cost of thinking (section 0's rows)."""
    model[0].configure(num_thoughts=1, do_sample=False)
    other = copy.deepcopy(model)
    convert(other[0])
    rows = []
    for label, kwargs, texts in (("thinking", {"think": True}, queries), ("no thinking", {"think": False}, queries),
                                 ("documents", None, docs)):
        def run(m, kwargs=kwargs, texts=texts):
            if kwargs is None:
                return m.encode_document(texts, batch_size=bs, convert_to_tensor=True)
            return m.encode_query(texts, batch_size=bs, convert_to_tensor=True, **kwargs)

        (a, b), (t_a, t_b) = alternated(lambda: run(model), lambda: run(other))
        cos = torch.nn.functional.cosine_similarity(a.float(), b.float())
        rows.append((f"{name} vs float32, {label} (speed-up float32/{name})", t_a / t_b,
                     f"{t_a / len(texts):.4f}s vs {t_b / len(texts):.4f}s per text (2 runs each); embedding cosine "
                     f"mean {cos.mean():.4f}, min {cos.min():.4f}"))
    return rows + [(f"{name}: {label}", ratio, detail) for label, ratio, detail in thinking_cost(other, queries, bs)]


def _ids(module):
    return {"pad_id": module.tokenizer.pad_token_id, "eos_id": module.builder.eos_id, "emb_id": module.builder.emb_id,
            "suppress_ids": module.special_token_ids}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="queries encoded together, as the eval job does")
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--int8", action="store_true", help="also measure int8 dynamic quantisation (section 5)")
    parser.add_argument("--bf16", action="store_true", help="also measure bfloat16 weights (section 6)")
    parser.add_argument("--cost-only", action="store_true", help="skip sections 1-4")
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

    print("\n| measure | ratio | detail |\n|---|---|---|", flush=True)

    def report(*rows):  # each row as soon as it is measured, so a cut-short run keeps what it measured
        for name, ratio, detail in rows:
            print(f"| {name} | {ratio:.2f} | {detail} |", flush=True)

    # 0. the cost of thinking at the main job's settings, vs the FLOP floor
    report(*thinking_cost(model, queries, bs))
    if not args.cost_only:
        report_sections_1_to_4(model, queries, docs, bs, report)
    if args.int8:
        report(*converted_rows(model, queries, docs, bs, "int8", lambda m: m.quantize_int8()))
    if args.bf16:
        report(*converted_rows(model, queries, docs, bs, "bfloat16", lambda m: m.to(torch.bfloat16)))
    return 0


def report_sections_1_to_4(model, queries, docs, bs, report) -> None:
    module = model[0]
    # 1. one pass vs two passes, greedy K=1 (identical thoughts in both), alternated to share machine noise
    (one, two), (t_one, t_two) = alternated(lambda: one_pass(module, queries, bs),
                                            lambda: two_pass(module, queries, bs))
    max_diff = (one - two).abs().max().item()
    cos = (one * two).sum(-1).min().item()
    report(("one-pass vs two-pass query encoding (time ratio two/one)", t_two / t_one,
            f"{t_one:.1f}s vs {t_two:.1f}s (2 runs each); max |diff|={max_diff:.2e}, min cos={cos:.6f}"))

    # 2. cached vs uncached
    with tempfile.TemporaryDirectory() as tmp:
        module.thought_cache = ThoughtCache(os.path.join(tmp, "thoughts.sqlite"))
        _, t_fill = timed(lambda: model.encode_query(queries, batch_size=bs))
        _, t_cached = timed(lambda: model.encode_query(queries, batch_size=bs))
        module.thought_cache = None
    report(("cached vs uncached (speed-up uncached/cached)", t_fill / t_cached, f"{t_fill:.1f}s vs {t_cached:.2f}s"))

    # 3. K=3 sampled vs K=1 sampled
    # alternated, two runs each, so that machine noise falls on both sides
    module.configure(do_sample=True, temperature=0.1, top_p=0.9, seed=0)

    def encode_k(k):
        module.configure(num_thoughts=k)
        return model.encode_query(queries, batch_size=bs)

    _, (t_k1, t_k3) = alternated(lambda: encode_k(1), lambda: encode_k(3))
    report(("K=3 vs K=1 sampled thoughts (time ratio K3/K1)", t_k3 / t_k1, f"{t_k1:.1f}s vs {t_k3:.1f}s (2 runs each)"))

    # 4. documents vs plain Transformer + Pooling("lasttoken")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    backbone = Transformer(str(default_backbone_path()),
                           processor_kwargs={"model_max_length": module.max_document_tokens})
    if backbone.tokenizer.pad_token is None:
        backbone.tokenizer.pad_token = backbone.tokenizer.eos_token
    plain = SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension(), "lasttoken")])
    model.encode_document(docs[:bs], batch_size=bs)  # warm-up both
    plain.encode(docs[:bs], batch_size=bs)
    _, t_doc = timed(lambda: model.encode_document(docs, batch_size=bs))
    _, t_plain = timed(lambda: plain.encode(docs, batch_size=bs))

    report(("documents: o1-embedder vs Transformer+Pooling(lasttoken) (throughput ratio)", t_plain / t_doc,
            f"{len(docs) / t_doc:.1f} vs {len(docs) / t_plain:.1f} docs/s"))


if __name__ == "__main__":
    sys.exit(main())
