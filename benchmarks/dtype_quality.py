"""Does the automatic bfloat16 mode keep the embedded default's quality? nDCG@10 float32 vs automatic, paired.

    python benchmarks/dtype_quality.py [--dev runs/recipe-dev/dev] [--out runs/dtype-quality] [--no-cranfield]

Scores the embedded default (its shipped settings: greedy, one thought of up to 32 tokens, query weight 0.5,
documents up to 512 tokens) with float32 weights and in the automatic mode (bfloat16 where the CPU has AMX or
AVX512-BF16), thinking and not, on all of Cranfield and on the recipe's Wikipedia dev collection (made by
``python examples/train_default.py --out runs/recipe-dev --stop-after records``), and prints each collection's
table with the paired test of automatic against float32 (the target: within 0.005) and seconds per query.
The thought cache is off, so every row generates its thoughts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["O1_EMBEDDER_THOUGHT_CACHE"] = "off"

from o1_embedder.data import load_beir, load_cranfield  # noqa: E402
from o1_embedder.evaluation import evaluate_dense, write_report  # noqa: E402
from o1_embedder.evaluation.significance import paired_comparisons  # noqa: E402
from o1_embedder.model.loading import load_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", default="runs/recipe-dev/dev", help="the recipe's dev collection (BEIR folder)")
    parser.add_argument("--out", default="runs/dtype-quality")
    parser.add_argument("--no-cranfield", action="store_true", help="the dev collection only")
    args = parser.parse_args(argv)
    collections = [] if args.no_cranfield else [load_cranfield()]
    if Path(args.dev).is_dir():
        collections.append(load_beir(args.dev, name="wikipedia-dev"))
    else:
        print(f"{args.dev} not found: Cranfield only", file=sys.stderr)
    for data in collections:
        results = []
        for mode in ("float32", None):
            model = load_model("o1-embedder", dtype=mode)
            label = "float32" if mode else f"automatic, {model[0].dtype_choice['dtype']}"
            for think in (True, False):
                results.append(evaluate_dense(model, data, name=f"{label} ({'think' if think else 'no think'})",
                                              query_kwargs={"think": think}, batch_size=16, query_batch_size=64,
                                              cache_dir=Path(args.out) / "cache"))
            del model
        names = [r["name"] for r in results]
        tests = paired_comparisons(results, [(names[2], names[0]), (names[3], names[1])])
        paths = write_report(results, Path(args.out) / data.name, f"{data.name}: float32 vs automatic", tests)
        print(paths["md"].read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
