"""Domain adaptation measured on Cranfield: adapt on its 1,400 documents only, then score on its queries.

    python examples/adapt_cranfield.py --out runs/adapt-cranfield [adapt options ...]

Runs ``o1-embedder adapt cranfield --eval`` (every stage but eval reads only the documents), then prints nDCG@10
on a seeded half of the queries (the half settings are chosen on), on the other half and on all of them, with
paired tests (two-sided randomisation, 10,000 sign flips) of the adapted model against the starting one, BM25
and all-MiniLM-L6-v2, thinking against not thinking.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from o1_embedder.cli import main as cli
from o1_embedder.data import cranfield_path, load_cranfield
from o1_embedder.evaluation.significance import paired_test

PAIRS = [("adapted (think)", "before (think)"), ("adapted (no think)", "before (no think)"),
         ("adapted (think)", "adapted (no think)"), ("adapted (think)", "BM25"),
         ("adapted (think)", "all-MiniLM-L6-v2")]


def halves(seed: int = 0) -> dict[str, list[str]]:
    """The judged Cranfield queries split in two by a seeded shuffle: ``dev`` (settings chosen here) and ``test``."""
    queries = load_cranfield().judged_queries()
    order = sorted(queries)
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return {"dev half": sorted(order[:half]), "test half": sorted(order[half:]), "all": sorted(order)}


def report(results_file: Path, seed: int = 0) -> str:
    rows = {r["name"]: r["per_query"]["ndcg@10"] for r in json.loads(results_file.read_text())["results"]}
    lines = []
    for split, ids in halves(seed).items():
        lines += [f"## {split} ({len(ids)} queries)", "", "| model | nDCG@10 |", "|---|---:|"]
        lines += [f"| {name} | {sum(scores.get(q, 0.0) for q in ids) / len(ids):.4f} |"
                  for name, scores in rows.items()]
        lines += ["", "| comparison | difference | 95% CI | p |", "|---|---:|---:|---:|"]
        for a, b in PAIRS:
            if a in rows and b in rows:
                t = paired_test({q: rows[a].get(q, 0.0) for q in ids}, {q: rows[b].get(q, 0.0) for q in ids})
                lines.append(f"| {a} vs {b} | {t['difference']:+.4f} | [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] | "
                             f"{t['p_value']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    if "--out" not in argv:
        raise SystemExit("usage: python examples/adapt_cranfield.py --out DIR [adapt options]")
    out = Path(argv[argv.index("--out") + 1])
    if "--report-only" not in argv:
        code = cli(["adapt", str(cranfield_path()), "--eval", *argv])
        if code:
            return code
    print(report(out / "eval" / "results.json"))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
