"""Retrieval evaluation: exact dense search, BM25, a corpus-embedding cache and reports.

The corpus side is paid for once: :class:`EmbeddingCache` keeps corpus embeddings on disk under a key
made of the model fingerprint and the exact (sorted) corpus ids and texts, so re-running an evaluation
with other query settings (thinking on/off, more thoughts) never re-embeds the corpus.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.beir import BeirDataset, document_text
from ..files import atomic_write, atomic_write_text
from .bm25 import BM25Index
from .metrics import HEADLINE_METRICS, evaluate_run, query_ndcg, relevant_queries

__all__ = [
    "EmbeddingCache",
    "bm25_run",
    "embed_corpus",
    "evaluate_bm25",
    "evaluate_dense",
    "exact_search",
    "model_fingerprint",
    "results_markdown",
    "write_report",
]

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]


# ----------------------------------------------------------------------------------------------- search
def exact_search(query_emb: np.ndarray, doc_emb: np.ndarray, doc_ids: Sequence[str], query_ids: Sequence[str],
                 top_k: int = 100) -> Run:
    """Inner-product search over all documents (faiss ``IndexFlatIP``), ``top_k`` per query.

    Embeddings are expected L2-normalised (inner product = cosine). Returns ``{query id: {doc id: score}}``.
    """
    import faiss

    queries = np.ascontiguousarray(query_emb, dtype=np.float32)
    docs = np.ascontiguousarray(doc_emb, dtype=np.float32)
    if queries.ndim != 2 or docs.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got query {queries.shape} and document {docs.shape}")
    if queries.shape[1] != docs.shape[1]:
        raise ValueError(f"dimension mismatch: queries have {queries.shape[1]}, documents {docs.shape[1]}")
    if len(query_ids) != queries.shape[0] or len(doc_ids) != docs.shape[0]:
        raise ValueError(f"{len(query_ids)} query ids for {queries.shape[0]} query rows, "
                         f"{len(doc_ids)} document ids for {docs.shape[0]} document rows")
    for what, array, ids in (("query", queries, query_ids), ("document", docs, doc_ids)):
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        if bad.size:
            shown = ", ".join(repr(ids[i]) for i in bad[:5])
            raise ValueError(f"{bad.size} {what} embedding(s) contain NaN or inf, e.g. ids {shown}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    run: Run = {str(qid): {} for qid in query_ids}
    if docs.shape[0] == 0 or queries.shape[0] == 0:
        return run
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    scores, indices = index.search(queries, min(top_k, docs.shape[0]))
    for row, qid in enumerate(query_ids):
        run[str(qid)] = {str(doc_ids[i]): float(s) for i, s in zip(indices[row], scores[row]) if i >= 0}
    return run


def bm25_run(corpus: Mapping[str, dict], queries: Mapping[str, str], top_k: int = 100,
             show_progress: bool = False) -> Run:
    """BM25 (``bm25s`` defaults, English stopwords, no stemming) over ``title text`` of each document.

    Documents sharing no term with a query (score 0) are not returned for it.
    """
    doc_ids = list(corpus)
    query_ids = list(queries)
    run: Run = {str(qid): {} for qid in query_ids}
    if not doc_ids or not query_ids:
        return run
    index = BM25Index([document_text(corpus[d]) for d in doc_ids], show_progress=show_progress)
    for qid, hits in zip(query_ids, index.search([queries[q] for q in query_ids], top_k)):
        run[str(qid)] = {doc_ids[i]: score for i, score in hits}
    return run


# ------------------------------------------------------------------------------------------------ cache
class EmbeddingCache:
    """Arrays on disk (``{key}.npy``), written atomically; the key is a SHA-256 of the key parts.

    ``hits`` and ``misses`` count lookups. A cached file that cannot be read, or has the wrong number
    of rows, is recomputed (with a warning) and replaced.
    """

    VERSION = "o1_embedder.embedding_cache.v1"

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @classmethod
    def key(cls, key_parts: Iterable[str]) -> str:
        """SHA-256 over the parts, each length-prefixed so that no two part lists collide."""
        digest = hashlib.sha256(cls.VERSION.encode())
        for part in key_parts:
            data = str(part).encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        return digest.hexdigest()

    @staticmethod
    def corpus_key_parts(fingerprint: str, doc_ids: Sequence[str], texts: Sequence[str]) -> list[str]:
        """Key parts for a corpus: the model fingerprint, then ``id, text`` pairs sorted by id."""
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} document ids but {len(texts)} texts")
        parts = [f"model:{fingerprint}"]
        for doc_id, text in sorted(zip(doc_ids, texts)):
            parts += [doc_id, text]
        return parts

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.npy"

    def get_or_compute(self, key_parts: Iterable[str], compute_fn: Callable[[], np.ndarray],
                       expected_rows: int | None = None, expected_width: int | None = None) -> np.ndarray:
        """The array stored under ``key_parts``, or ``compute_fn()`` stored there and returned. A stored array with
        the wrong number of rows or columns, or with NaN or infinite values, is dropped (a warning names the
        file) and computed again."""
        path = self.path_for(self.key(key_parts))
        if path.exists():
            try:
                array = np.load(path, allow_pickle=False)
                problem = None
                if expected_rows is not None and array.shape[0] != expected_rows:
                    problem = f"has {array.shape[0]} rows, expected {expected_rows}"
                elif expected_width is not None and (array.ndim != 2 or array.shape[1] != expected_width):
                    problem = f"has shape {array.shape}, expected width {expected_width}"
                elif np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                    problem = "holds NaN or infinite values"
                if problem is None:
                    self.hits += 1
                    return array
                logger.warning("embedding cache %s %s; dropped and recomputed", path, problem)
            except (OSError, ValueError) as err:
                logger.warning("embedding cache %s is unreadable (%s); recomputing", path, err)
        self.misses += 1
        array = np.asarray(compute_fn())
        if expected_rows is not None and array.shape[0] != expected_rows:
            raise ValueError(f"compute_fn returned {array.shape[0]} rows, expected {expected_rows}")
        atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))
        return array


# ------------------------------------------------------------------------------------------------ model
def embed_corpus(model, texts: Sequence[str], batch_size: int, show_progress_bar: bool = True) -> np.ndarray:
    """Document embeddings (float32, L2-normalised) via ``model.encode_document``."""
    embeddings = model.encode_document(list(texts), batch_size=batch_size, show_progress_bar=show_progress_bar,
                                       convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(embeddings, dtype=np.float32)


def _weights_digest(model) -> str:
    """SHA-256 of every parameter and buffer: name, shape, dtype and raw bytes (exact, ~1 GB/s on a CPU)."""
    import torch

    digest = hashlib.sha256()
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    with torch.no_grad():
        for name, tensor in sorted(tensors, key=lambda item: item[0]):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            digest.update(raw)
    return digest.hexdigest()[:32]


def model_fingerprint(model) -> str:
    """A string that changes whenever the model's document embeddings could change.

    The first module's ``fingerprint()`` when it has one (o1-embedder models), else a hash of all
    weights; plus every module's class and config, ``max_seq_length`` and the model's prompts.
    """
    first = model[0]
    module_fingerprint = getattr(first, "fingerprint", None)
    parts = [f"module:{module_fingerprint()}" if callable(module_fingerprint) else f"weights:{_weights_digest(model)}"]
    for module in model:
        config = dict(module.get_config_dict()) if hasattr(module, "get_config_dict") else {}
        for key in getattr(module, "query_only_settings", ()):  # queries only: the corpus embeddings are the same
            config.pop(key, None)
        parts.append(f"{type(module).__module__}.{type(module).__qualname__}:"
                     f"{json.dumps(config, sort_keys=True, default=str)}")
    parts.append(f"max_seq_length={getattr(model, 'max_seq_length', None)}")
    parts.append(f"prompts={json.dumps(getattr(model, 'prompts', {}) or {}, sort_keys=True)}")
    parts.append(f"default_prompt_name={getattr(model, 'default_prompt_name', None)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _module_stats(model) -> dict[str, float] | None:
    """A copy of the first module's numeric ``stats`` dict (o1-embedder: generated tokens, thoughts), if any."""
    try:
        stats = getattr(model[0], "stats", None)
    except (TypeError, IndexError, KeyError):
        return None
    if not isinstance(stats, dict):
        return None
    return {k: v for k, v in stats.items() if isinstance(v, (int, float))}


def evaluate_dense(model, dataset: BeirDataset, *, name: str, query_kwargs: dict | None = None,
                   cache_dir: str | os.PathLike | None = None, batch_size: int = 16, top_k: int = 100,
                   fingerprint: str | None = None, show_progress_bar: bool = False,
                   query_batch_size: int | None = None) -> dict[str, Any]:
    """Embed corpus and queries with a Sentence-Transformers model, search exactly, score.

    Only the queries with a relevant judgment are encoded. ``query_kwargs`` go to ``model.encode_query``
    (for o1-embedder models e.g. ``{"think": False}``; pass nothing for plain models); ``query_batch_size``
    (default ``batch_size``) is the batch of queries, larger for thinking models: queries that think together
    share decoding steps. With ``cache_dir``
    corpus embeddings are cached under ``fingerprint`` (default: :func:`model_fingerprint`) and the corpus.

    Returns ``name``, ``dataset``, ``num_queries``, ``num_docs``, ``metrics`` (see
    :func:`~o1_embedder.evaluation.metrics.evaluate_run`), ``seconds_corpus`` (≈0 on a cache hit),
    ``corpus_cache_hit``, ``seconds_queries``, ``seconds_per_query``, ``dtype`` (the weights' type), and when
    the model's first module keeps ``stats`` (o1-embedder), ``generated_tokens_per_query`` and ``query_stats``
    (the deltas).
    """
    query_kwargs = dict(query_kwargs or {})
    doc_ids = sorted(dataset.corpus)  # canonical order: the cache key sorts by id too
    texts = [document_text(dataset.corpus[d]) for d in doc_ids]

    started = time.perf_counter()
    cache_hit = None
    if cache_dir is not None:
        cache = EmbeddingCache(cache_dir)
        fingerprint = fingerprint or model_fingerprint(model)
        width = getattr(model, "get_embedding_dimension", None)
        doc_emb = cache.get_or_compute(
            EmbeddingCache.corpus_key_parts(fingerprint, doc_ids, texts),
            lambda: embed_corpus(model, texts, batch_size, show_progress_bar),
            expected_rows=len(doc_ids), expected_width=width() if callable(width) else None,
        )
        cache_hit = cache.hits > 0
    else:
        doc_emb = embed_corpus(model, texts, batch_size, show_progress_bar)
    seconds_corpus = time.perf_counter() - started

    query_ids = [qid for qid in relevant_queries(dataset.qrels) if qid in dataset.queries]
    before = _module_stats(model)
    started = time.perf_counter()
    query_emb = model.encode_query([dataset.queries[q] for q in query_ids], batch_size=query_batch_size or batch_size,
                                   show_progress_bar=show_progress_bar, convert_to_numpy=True,
                                   normalize_embeddings=True, **query_kwargs)
    seconds_queries = time.perf_counter() - started
    after = _module_stats(model)

    run = exact_search(np.asarray(query_emb), doc_emb, doc_ids, query_ids, top_k=top_k)
    result: dict[str, Any] = {
        "name": name,
        "dataset": dataset.name,
        "num_queries": len(query_ids),
        "num_docs": len(doc_ids),
        "metrics": evaluate_run(dataset.qrels, run),
        "per_query": {"ndcg@10": query_ndcg(dataset.qrels, run)},
        "run": run,
        "seconds_corpus": seconds_corpus,
        "corpus_cache_hit": cache_hit,
        "seconds_queries": seconds_queries,
        "seconds_per_query": seconds_queries / max(len(query_ids), 1),
        "query_kwargs": {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                         for k, v in query_kwargs.items()},
        "top_k": top_k,
        "dtype": weights_dtype(model),
    }
    if before is not None and after is not None:
        delta = {k: after[k] - before.get(k, 0) for k in after}
        result["query_stats"] = delta
        if "generated_tokens" in delta:
            result["generated_tokens_per_query"] = delta["generated_tokens"] / max(len(query_ids), 1)
    return result


def weights_dtype(model) -> str | None:
    """The floating-point type of a model's first weight (``float32``, ``bfloat16`` ...); None for an object
    that only has ``encode`` methods."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return str(first.dtype).replace("torch.", "") if first is not None else None


def evaluate_bm25(dataset: BeirDataset, *, name: str = "BM25", top_k: int = 100) -> dict[str, Any]:
    """The BM25 baseline in the same result format as :func:`evaluate_dense` (corpus time = indexing + search)."""
    query_ids = [qid for qid in relevant_queries(dataset.qrels) if qid in dataset.queries]
    started = time.perf_counter()
    run = bm25_run(dataset.corpus, {q: dataset.queries[q] for q in query_ids}, top_k=top_k)
    seconds = time.perf_counter() - started
    return {
        "name": name,
        "dataset": dataset.name,
        "num_queries": len(query_ids),
        "num_docs": len(dataset.corpus),
        "metrics": evaluate_run(dataset.qrels, run),
        "per_query": {"ndcg@10": query_ndcg(dataset.qrels, run)},
        "run": run,
        "seconds_corpus": seconds,
        "corpus_cache_hit": None,
        "seconds_queries": 0.0,
        "seconds_per_query": seconds / max(len(query_ids), 1),
        "top_k": top_k,
    }


# ----------------------------------------------------------------------------------------------- report
def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def cached_share(result: Mapping[str, Any]) -> float:
    """The share of a result's thoughts read from the thought cache (0 when it generated them all or none)."""
    stats = result.get("query_stats") or {}
    cached, generated = stats.get("thoughts_from_cache", 0), stats.get("thoughts_generated", 0)
    return cached / (cached + generated) if cached + generated else 0.0


def _cost(result: Mapping[str, Any], key: str, digits: int) -> str:
    """A cost cell: marked when the thoughts came from the cache, since it then is not what thinking costs."""
    text = _fmt(result.get(key), digits)
    share = cached_share(result)
    if share >= 0.995:
        return f"{text} (cached)"
    if share > 0:
        return f"{text} ({share:.0%} cached)"
    return text


def results_markdown(results: Sequence[Mapping[str, Any]], title: str,
                     comparisons: Sequence[Mapping[str, Any]] = ()) -> str:
    """The Markdown table of a report (one row per result), then the paired tests, if any. The cost of a row whose
    thoughts came from the thought cache is marked as such: it is not what thinking costs."""
    with_tokens = any(r.get("generated_tokens_per_query") is not None for r in results)
    header = ["model", "nDCG@10", "MRR@10", "Recall@100", "seconds/query"] + (["tokens/query"] if with_tokens else [])
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for r in results:
        metrics = r.get("metrics", {})
        row = [str(r.get("name", "?")).replace("|", "\\|")] + [_fmt(metrics.get(m)) for m in HEADLINE_METRICS]
        row.append(_cost(r, "seconds_per_query", 4))
        if with_tokens:
            row.append(_cost(r, "generated_tokens_per_query", 1))
        lines.append("| " + " | ".join(row) + " |")
    datasets = sorted({f"{r['dataset']}" for r in results if r.get("dataset")})
    if datasets:
        lines += ["", f"Dataset: {', '.join(datasets)}. Metrics averaged over queries with a relevant judgment; "
                      "a query with no ranking counts as 0."]
    if any(cached_share(r) > 0 for r in results):
        lines += ["", "Rows marked cached read their thoughts from the thought cache: their seconds and tokens per "
                      "query are not what thinking costs (run with --no-thought-cache, or "
                      "O1_EMBEDDER_THOUGHT_CACHE=off, to measure it)."]
    if comparisons:
        lines += ["", "Paired tests over queries (nDCG@10; p: two-sided randomisation test, 10,000 sign flips; "
                      "CI: bootstrap 95% of the mean difference):", "",
                  "| comparison | difference | 95% CI | p |", "|---|---:|---:|---:|"]
        for c in comparisons:
            lines.append(f"| {c['a']} vs {c['b']} | {c['difference']:+.4f} | [{c['ci_low']:+.4f}, "
                         f"{c['ci_high']:+.4f}] | {c['p_value']:.4f} |")
    return "\n".join(lines) + "\n"


def _bar_chart_png(results: Sequence[Mapping[str, Any]], title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(r.get("name", "?")) for r in results]
    labels = ["nDCG@10", "MRR@10", "Recall@100"]
    width = 0.8 / len(labels)
    x = np.arange(len(names))
    fig, (ax, cost) = plt.subplots(1, 2, figsize=(max(9.0, 2.4 * len(names) + 3), 4.8),
                                   gridspec_kw={"width_ratios": [2, 1]})
    rotate = {"rotation": 20 if len(names) > 3 else 0, "ha": "right" if len(names) > 3 else "center"}
    try:
        for i, (metric, label) in enumerate(zip(HEADLINE_METRICS, labels)):
            values = [float(r.get("metrics", {}).get(metric) or 0.0) for r in results]
            bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_xticks(x, names, **rotate)
        top = max([float(r.get("metrics", {}).get(m) or 0.0) for r in results for m in HEADLINE_METRICS] + [0.0])
        ax.set_ylim(0, min(1.0, top) * 1.15 + 0.05)
        ax.set_ylabel("score")
        ax.set_title(title, fontsize=10)
        # The legend sits below the axes, never over a bar or its label.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(names) <= 3 else -0.3), ncols=3,
                  fontsize=8, frameon=False)
        # What each row costs per query: seconds, with generated tokens (or "cached") on the bar.
        seconds = [float(r.get("seconds_per_query") or 0.0) for r in results]
        bars = cost.bar(x, seconds, 0.6, color=["#bbbbbb" if cached_share(r) > 0 else "#4c72b0" for r in results])
        notes = []
        for r, value in zip(results, seconds):
            tokens = r.get("generated_tokens_per_query")
            note = f"{value:.3f}s" + (f"\n{tokens:.0f} tok" if tokens else "")
            notes.append(note + ("\ncached" if cached_share(r) > 0 else ""))
        cost.bar_label(bars, labels=notes, fontsize=7, padding=2)
        cost.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
        cost.set_ylim(0, max(seconds + [1e-3]) * 1.35)
        cost.set_ylabel("seconds per query")
        cost.set_title("cost per query (grey: thoughts from the cache)", fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def slug(name: str) -> str:
    """A file-name-safe form of a result name: ``o1-embedder (think)`` -> ``o1-embedder_think``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "result"
    return cleaned[:80]


def _whitespace_ids(run: Mapping[str, Mapping[str, float]]) -> bool:
    return any(any(c.isspace() for c in qid) or any(any(c.isspace() for c in doc) for doc in docs)
               for qid, docs in run.items())


def trec_run_text(run: Mapping[str, Mapping[str, float]], tag: str) -> str:
    """A run in TREC format (``qid Q0 docid rank score tag``), ranks in trec_eval order."""
    lines = []
    for qid in sorted(run):
        ranked = sorted(run[qid].items(), key=lambda item: (item[1], item[0]), reverse=True)
        lines += [f"{qid} Q0 {doc} {rank} {score:.6f} {tag}" for rank, (doc, score) in enumerate(ranked, start=1)]
    return "\n".join(lines) + ("\n" if lines else "")


def write_report(results: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, title: str,
                 comparisons: Sequence[Mapping[str, Any]] = ()) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` (each atomically) and return their paths.

    Results that carry their ``run`` also get a TREC run file (``runs/NAME.trec``, readable by trec_eval
    and ``pytrec_eval``; not written, with a warning, when ids contain spaces, which that format cannot hold)
    and an mteb result file (``mteb/results/o1-embedder__NAME/REVISION/TASK.json`` with its ``model_meta.json``,
    read back by ``mteb.ResultCache(cache_path=OUT/"mteb")``; written when mteb is installed).
    ``comparisons`` are paired tests (:func:`~o1_embedder.evaluation.significance.paired_comparisons`),
    listed under the table and kept in the JSON.
    """
    if not results:
        raise ValueError("write_report needs at least one result")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; a report is written into a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    for result in results:
        run = result.get("run")
        if run is None:
            continue
        name = slug(str(result.get("name", "result")))
        if _whitespace_ids(run):  # the TREC format is whitespace-separated: such ids cannot be written there
            logger.warning("%s: no TREC run file, because query or document ids contain spaces (the format is "
                           "whitespace-separated); results.json and the mteb file hold the scores", name)
        else:
            paths[f"trec:{name}"] = atomic_write_text(out / "runs" / f"{name}.trec", trec_run_text(run, name))
        if importlib.util.find_spec("mteb") is not None:
            from o1_embedder.evaluation.mteb.results import write_task_result

            paths[f"mteb:{name}"] = write_task_result(result, out / "mteb")
    stored = [{k: v for k, v in r.items() if k != "run"} for r in results]
    payload = {"title": title, "results": stored, "comparisons": [dict(c) for c in comparisons]}
    atomic_write_text(paths["json"], json.dumps(payload, indent=2, default=_json_default) + "\n")
    atomic_write_text(paths["md"], results_markdown(results, title, comparisons))
    png = _bar_chart_png(results, title)
    atomic_write(paths["png"], lambda handle: handle.write(png))
    return paths
