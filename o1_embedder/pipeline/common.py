"""What the recipe and domain adaptation share: progress bars, the writing model, the train and eval stages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from o1_embedder.pipeline.runner import Run, log

__all__ = ["evaluate_models", "progress", "train_stage", "writer_model"]


def progress(total: int, desc: str, unit: str):
    """A progress bar with items per second and time left."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def writer_model(name: str, dtype: str):
    """An o1-embedder model that writes (questions, thoughts) in ``dtype``, its thought cache off."""
    from o1_embedder.model.loading import load_model

    model = load_model(name, dtype=dtype)
    module: Any = model[0]
    module.thought_cache = None
    return model


def train_stage(run: Run, config) -> list[dict]:
    """Train with ``config`` (a :class:`~o1_embedder.training.TrainConfig`), keep its log in ``train_log.json``
    and say how the loss terms moved; returns the log."""
    from o1_embedder.files import atomic_write_text
    from o1_embedder.training import train

    result = train(config)
    atomic_write_text(run.path("train_log.json"), json.dumps(result.log_history, indent=1) + "\n")
    history = [h for h in result.log_history if "contrastive" in h]
    if history:
        log("train: " + ", ".join(f"{k} {history[0][k]:.3f} -> {history[-1][k]:.3f}"
                                  for k in ("contrastive", "generation", "distillation") if k in history[0]))
    return result.log_history


def evaluate_models(data, models: Sequence[tuple[str, str]], out_dir: Path, *, pairs: Sequence[tuple[str, str]],
                    cache_dir: Path, dtype: str = "auto", document_tokens: int | None = None,
                    configure: dict[str, Any] | None = None, think_modes: Sequence[bool] = (True, False),
                    title: str | None = None) -> dict[str, Path]:
    """nDCG@10 and more of each ``(label, model folder)`` thinking and not (rows ``"label (think)"`` /
    ``"label (no think)"``), BM25 and all-MiniLM-L6-v2 on ``data`` (a BEIR dataset), with paired tests of
    ``pairs``; the report (JSON, Markdown, PNG, TREC runs) goes to ``out_dir``, the Markdown table is printed.

    ``dtype`` is the weights' type of the o1-embedder models, ``document_tokens`` their document truncation
    (default: their own), ``configure`` thinking settings applied to each (default: their own)."""
    from o1_embedder.evaluation import evaluate_bm25, evaluate_dense, write_report
    from o1_embedder.evaluation.significance import paired_comparisons
    from o1_embedder.model.loading import MINILM, load_comparison_model, load_model

    results = []
    for label, path in models:
        model = load_model(str(path), dtype=dtype)
        if configure:
            model[0].configure(**configure)
        if document_tokens:
            model.max_seq_length = document_tokens
        for think in think_modes:
            result = evaluate_dense(model, data, name=f"{label} ({'think' if think else 'no think'})",
                                    query_kwargs={"think": think}, cache_dir=cache_dir, batch_size=16,
                                    query_batch_size=64)
            results.append(result)
            log(f"eval {data.name}: {result['name']} nDCG@10={result['metrics']['ndcg@10']:.4f}")
        del model
    results.append(evaluate_bm25(data))
    results.append(evaluate_dense(load_comparison_model(MINILM), data, name=MINILM, cache_dir=cache_dir,
                                  batch_size=32))
    for r in results[-2:]:
        log(f"eval {data.name}: {r['name']} nDCG@10={r['metrics']['ndcg@10']:.4f}")
    names = {r["name"] for r in results}
    tests = paired_comparisons(results, [p for p in pairs if p[0] in names and p[1] in names])
    title = title or f"{data.name}: {len(data.queries)} queries, {len(data.corpus)} documents"
    paths = write_report(results, out_dir, title, comparisons=tests)
    print(Path(paths["md"]).read_text(encoding="utf-8"), flush=True)
    return paths
