"""The evaluation job: an o1-embedder model with and without thinking, BM25 and other Sentence-Transformers
models, side by side on one BEIR collection, written as JSON, Markdown and a PNG chart."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o1_embedder.data.beir import BeirDataset, load_beir, resolve_beir_path
from o1_embedder.evaluation.retrieval import evaluate_bm25, evaluate_dense, results_markdown, write_report
from o1_embedder.evaluation.significance import paired_comparisons
from o1_embedder.files import looks_like_path
from o1_embedder.generation.cache import default_cache_dir
from o1_embedder.model.loading import MINILM, load_comparison_model  # noqa: F401 (imported from here before)
from o1_embedder.model.overrides import ThinkingOverrides

logger = logging.getLogger(__name__)



def resolve_dataset(name_or_path: str | os.PathLike, split: str = "test") -> BeirDataset:
    """A BEIR folder, or ``cranfield`` for the copy shipped with the package."""
    return load_beir(resolve_beir_path(name_or_path), split=split)


def _opt(default, help: str, factory=None, no_help: str | None = None, **extra):
    metadata = {"help": help, **({"no_help": no_help} if no_help else {}), **extra}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class EvalSettings(ThinkingOverrides):
    """Everything ``o1-embedder eval`` can set; each field is one command-line option (the thinking overrides,
    shared with ``serve`` and ``think``, come first)."""

    model: str = _opt("o1-embedder", "o1-embedder model folder or hub id (default: the embedded default)")
    compare: list[str] = _opt(None, "Sentence-Transformers models to compare with", factory=lambda: [MINILM])
    bm25: bool = _opt(True, "score BM25 too", no_help="leave BM25 out")
    hybrid: bool = _opt(False, "also fuse each o1-embedder row with BM25 (normalised score sum of their top 100): "
                               "rows 'NAME + BM25', with paired tests against each part")
    untrained: bool = _opt(True, "with the trained embedded default, also score its untrained backbone",
                           no_help="do not score the untrained backbone next to the trained embedded default")
    max_queries: int | None = _opt(None, "sample this many judged queries")
    max_docs: int | None = _opt(None, "keep the judged documents plus a sample up to this many")
    split: str = _opt("test", "qrels split")
    seed: int = _opt(0, "subset sampling seed")
    batch_size: int = _opt(16, "document encoding batch size")
    query_batch_size: int = _opt(64, "queries encoded together (thinking queries share decoding steps)")
    max_document_tokens: int | None = _opt(None, "truncate documents to this many tokens")
    dtype: str | None = _opt(None, "the o1-embedder models' weights in this floating-point type, e.g. float32 or "
                                   "bfloat16 (default: automatic, bfloat16 on CPUs with AMX or AVX512-BF16, where it "
                                   "is 1.7-2.4x faster at the same quality, else as saved)")
    cache_dir: str | None = _opt(None, "corpus-embedding cache (default: ~/.cache/o1_embedder/embeddings)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hybrid and not self.bm25:
            raise ValueError("--hybrid fuses with BM25: drop --no-bm25")
        for name in ("max_queries", "max_docs", "batch_size", "query_batch_size", "max_document_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.dtype is not None:
            from o1_embedder.generation.backends import float_dtype

            float_dtype(self.dtype)


@dataclass(frozen=True)
class EvalCommand(EvalSettings):
    """``o1-embedder eval DATASET``: the settings plus where the data is and where the report goes."""

    dataset: str = _opt(None, "BEIR folder (corpus.jsonl, queries.jsonl, qrels/), or 'cranfield' (shipped)",
                        positional=True)
    output: str | None = _opt(None, "report folder (default: runs/eval-DATASET)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"dataset is required (a BEIR folder or 'cranfield'), got {self.dataset!r}")

    @property
    def report_folder(self) -> str:
        return self.output or os.path.join("runs", f"eval-{os.path.basename(os.path.normpath(self.dataset))}")


def _configure(model, settings: EvalSettings) -> None:
    settings.apply(model[0])
    if settings.max_document_tokens is not None:
        model.max_seq_length = settings.max_document_tokens


def hybrid_result(dense: dict[str, Any], lexical: dict[str, Any], data: BeirDataset,
                  method: str = "minmax") -> dict[str, Any]:
    """The result of fusing two results' runs (:func:`~o1_embedder.evaluation.fusion.fuse_runs`), named
    ``"DENSE + LEXICAL"``; its cost is the sum of theirs."""
    from o1_embedder.evaluation.fusion import fuse_runs
    from o1_embedder.evaluation.metrics import evaluate_run, query_ndcg

    run = fuse_runs([dense["run"], lexical["run"]], method=method)
    return {"name": f"{dense['name']} + {lexical['name']}", "dataset": data.name, "split": data.split,
            "num_queries": dense.get("num_queries"), "num_docs": dense.get("num_docs"),
            "metrics": evaluate_run(data.qrels, run), "per_query": {"ndcg@10": query_ndcg(data.qrels, run)},
            "run": run, "fusion": method, "parts": [dense["name"], lexical["name"]],
            "seconds_per_query": (dense.get("seconds_per_query") or 0.0) + (lexical.get("seconds_per_query") or 0.0),
            "generated_tokens_per_query": dense.get("generated_tokens_per_query"),
            "query_stats": dense.get("query_stats")}


def comparison_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The paired tests a report lists: think vs no think, trained vs untrained, each mode vs the baselines, and each
    fused row vs its parts."""
    fused = [n for n in names if " + " in n]
    names_plain = [n for n in names if n not in fused]
    pairs_fused = [(n, part) for n in fused for part in n.split(" + ")]
    pairs = _plain_pairs(names_plain) + pairs_fused
    return [(a, b) for a, b in pairs if a in names and b in names]


def _plain_pairs(names: list[str]) -> list[tuple[str, str]]:
    modes = [n for n in names if n.endswith("(think)") or n.endswith("(no think)")]
    pairs = [(n, n.replace("(think)", "(no think)")) for n in modes if n.endswith("(think)")]
    pairs += [(n, n.replace("o1-embedder", "untrained")) for n in modes if n.startswith("o1-embedder")]
    others = [n for n in names if n not in modes]
    pairs += [(n, other) for n in modes if n.startswith("o1-embedder") for other in others]
    return [(a, b) for a, b in pairs if a in names and b in names]


def _check_outputs(output_dir: Path, settings: EvalSettings) -> None:
    """The report and cache folders can be written, and each comparison model is named once and exists."""
    from o1_embedder.evaluation.retrieval import slug
    from o1_embedder.files import check_creatable

    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output {output_dir} is a file; the report is a folder (results.json, .md, .png)")
    check_creatable(output_dir, "--output")
    if settings.cache_dir:
        if Path(settings.cache_dir).is_file():
            raise ValueError(f"--cache-dir {settings.cache_dir} is a file; the cache is a folder")
        check_creatable(settings.cache_dir, "--cache-dir")
    slugs: dict[str, str] = {}
    for name in settings.compare:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"--compare: a model name is empty ({name!r})")
        if looks_like_path(name) and not os.path.exists(name):
            raise FileNotFoundError(f"comparison model not found: {name}")
        if slug(name) in slugs:  # one table row and one run file per model
            raise ValueError(f"--compare names {slugs[slug(name)]!r} and {name!r} would share a report row and run "
                             f"file; give each model once")
        slugs[slug(name)] = name


def _o1_models(settings: EvalSettings) -> list[tuple[str, Any]]:
    """(row label prefix, loader) of the o1-embedder models to score: the model, and the untrained backbone beside
    the embedded default."""
    from o1_embedder.model.default import trained_default_dir
    from o1_embedder.model.loading import DEFAULT_MODEL_NAME, default_model, load_model, use_dtype

    models: list[tuple[str, Any]] = [("o1-embedder", lambda: load_model(settings.model, dtype=settings.dtype))]
    if settings.untrained and settings.model == DEFAULT_MODEL_NAME and not os.path.isdir(settings.model) \
            and trained_default_dir() is not None:
        models.append(("untrained", lambda: use_dtype(default_model(trained=False), settings.dtype)))
    return models


def _model_line(label_prefix: str, module: Any, settings: EvalSettings) -> str:
    """What was loaded and how it thinks, for the log."""
    gen = module.generation_settings
    decoding = "greedy" if not gen.do_sample else \
        f"sampled (t={gen.temperature}, top-p={gen.top_p}, seed={gen.seed})"
    cache = module.thought_cache.path if module.thought_cache is not None else "off"
    return (f"{label_prefix}: {settings.model if label_prefix == 'o1-embedder' else 'untrained default'}; thoughts "
            f"per query K={module.num_thoughts if gen.do_sample else 1}, {decoding}, <= {gen.max_new_tokens} new "
            f"tokens; query weight {module.query_weight:g}; documents <= {module.max_document_tokens} tokens; "
            f"weights {module.dtype} ({getattr(module, 'dtype_choice', {}).get('reason', 'as loaded')}); "
            f"thought cache: {cache}")


def _timed(add, log, evaluate, *args: Any, **kwargs: Any) -> None:
    """Add the result of ``evaluate(*args, **kwargs)`` and log its score and wall time."""
    started = time.perf_counter()
    result = evaluate(*args, **kwargs)
    add(result)
    log(f"{result['name']}: nDCG@10={result['metrics']['ndcg@10']:.4f} in {time.perf_counter() - started:.1f}s")


def run_eval(dataset_path: str | os.PathLike, output_dir: str | os.PathLike, settings: EvalSettings,
             log=print) -> dict[str, Any]:
    """Run the comparison and write the report. Returns ``{"results", "paths", "subset"}``.

    Everything that can be checked is checked before any model runs (the dataset, the report folder,
    comparison models given as paths); the report is rewritten after every result, so a comparison that
    fails late (a model name that cannot be loaded) leaves the report of everything scored before it,
    and the error is raised after that.
    """
    output_dir = Path(output_dir)
    _check_outputs(output_dir, settings)
    dataset = resolve_dataset(dataset_path, settings.split)
    data, subset = dataset.subset(settings.max_queries, settings.max_docs, seed=settings.seed)
    log(f"dataset: {subset}")
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir() / "embeddings"
    title = f"{dataset.name} ({data.split}): {len(data.queries)} queries, {len(data.corpus)} documents"
    results: list[dict[str, Any]] = []
    sizes = {"batch_size": settings.batch_size, "cache_dir": cache_dir, "show_progress_bar": True}

    def add(result: dict[str, Any]) -> None:
        results.append(result)
        write_report(results, output_dir, title)

    for label_prefix, load in _o1_models(settings):
        model = load()
        _configure(model, settings)
        log(_model_line(label_prefix, model[0], settings))
        for think in (True, False):
            label = f"{label_prefix} ({'think' if think else 'no think'})"
            _timed(add, log, evaluate_dense, model, data, name=label, query_kwargs={"think": think},
                   query_batch_size=settings.query_batch_size, **sizes)
        del model
    if settings.bm25:
        _timed(add, log, evaluate_bm25, data)
    if settings.hybrid:
        bm25 = results[-1]
        for dense in [r for r in results if r["name"].endswith("think)")]:
            _timed(add, log, hybrid_result, dense, bm25, data)
    failed = []
    for name in settings.compare:
        try:
            other = load_comparison_model(name)
        except (OSError, ValueError) as err:
            failed.append(f"{name}: {err}")
            log(f"{name}: cannot be loaded ({err}); left out of the report")
            continue
        _timed(add, log, evaluate_dense, other, data, name=name, **sizes)

    tests = paired_comparisons(results, comparison_pairs([r["name"] for r in results]))
    paths = write_report(results, output_dir, title, comparisons=tests)
    log("")
    log(results_markdown(results, title, tests))
    log(f"subset: {subset}")
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    if failed:
        raise ValueError("the report was written without these comparisons: " + "; ".join(failed))
    return {"results": results, "paths": paths, "subset": subset}
