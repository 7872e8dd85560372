"""Thought-synthesis throughput of the in-process transformers backend: batched vs one request at a time.

    python benchmarks/synth.py [--queries 16] [--max-new-tokens 32] [--batch-size 16] [--candidates 1]
                               [--threads N] [--device cpu]

On the embedded default backbone (SmolLM2-135M-Instruct, its chat template), the first Cranfield queries
with the default exploration prompt (instruction + one few-shot example), sampled (t=0.7, top-p=0.9).
Both runs generate the same texts (each sample has its own seeded generator), so the ratio compares
equal work; the runs are alternated twice to share machine noise. Prints thoughts/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from o1_embedder.data import load_cranfield  # noqa: E402
from o1_embedder.data.records import records_from_beir  # noqa: E402
from o1_embedder.generation.settings import GenerationSettings  # noqa: E402
from o1_embedder.generation.transformers_backend import TransformersBackend  # noqa: E402
from o1_embedder.model.default import default_backbone_path  # noqa: E402
from o1_embedder.synthesis.explore import ExplorationPrompt, FewShotPool, derive_seed  # noqa: E402


def run(backend, requests):
    started = time.perf_counter()
    results = backend.generate(requests)
    seconds = time.perf_counter() - started
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed, e.g. {failed[0]}")
    return results, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=1, help="samples per query (n)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--device", default="cpu", help="torch device (e.g. cuda)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    records = records_from_beir(load_cranfield())
    pool = FewShotPool.from_records(records, size=64, seed=0)
    prompt = ExplorationPrompt(num_examples=1, max_example_chars=300)
    chosen = records[: args.queries]
    requests = [prompt.request(r["query"], pool.choose(r, 1), n=args.candidates, seed=derive_seed(0, r["query_id"], 0))
                for r in chosen]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9)
    batched = TransformersBackend(str(default_backbone_path()), settings=settings, batch_size=args.batch_size,
                                  device=args.device)
    single = TransformersBackend(batched.lm, tokenizer=batched.tokenizer, settings=settings, batch_size=1)
    thoughts = len(requests) * args.candidates
    print(f"backbone: {batched.model_name}  chat template: {batched.use_chat_template}  queries={len(requests)} "
          f"n={args.candidates} max_new_tokens={args.max_new_tokens} batch={args.batch_size} "
          f"torch threads={torch.get_num_threads()}")

    run(batched, requests[:2])  # warm-up
    t_batched = t_single = 0.0
    same = total = 0
    tokens = 0
    for _ in range(2):
        out_b, seconds = run(batched, requests)
        t_batched += seconds
        out_s, seconds = run(single, requests)
        t_single += seconds
        for b, s in zip(out_b, out_s):
            same += sum(x == y for x, y in zip(b.texts, s.texts))
            total += len(b.texts)
        tokens += sum(r.tokens for r in out_b)

    rate_b, rate_s = 2 * thoughts / t_batched, 2 * thoughts / t_single
    print("\n| run | thoughts/s | seconds (2 runs) |\n|---|---|---|")
    print(f"| batched (batch {args.batch_size}) | {rate_b:.2f} | {t_batched:.1f} |")
    print(f"| one at a time | {rate_s:.2f} | {t_single:.1f} |")
    print(f"\nbatched / one-at-a-time throughput ratio: {rate_b / rate_s:.2f}x")
    print(f"identical texts in both runs: {same}/{total}; "
          f"mean generated tokens per thought: {tokens / (2 * thoughts):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
