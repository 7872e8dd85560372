"""Zero-label domain adaptation: a user's documents in, a model that retrieves them better out.

    o1-embedder adapt CORPUS --out DIR [--model o1-embedder] [--eval]

Stages (each seeded, resumable, timed, its outputs kept in DIR; see :mod:`o1_embedder.pipeline.runner`):

1. ``queries``  pseudo-queries from the documents (:mod:`o1_embedder.synthesis.queries`): questions written by
   the model being adapted and kept when the teacher committee ranks their document in its top
   ``round_trip_k`` (round trip), titles, and sentences cut out of their document (inverse cloze); one query
   per document and kind, kinds rotated so each is equally represented, at most ``train_queries`` in all;
2. ``mine``     hard negatives from the same corpus: the teacher's top ``mine_depth`` documents for the query,
   never the query's own document, skipping any that the teacher scores within ``negative_margin`` (relative)
   of the positive (likely unjudged positives);
3. ``teacher``  teacher scores of the positive and the negatives (the fused committee, or a cross-encoder),
   trained toward with the distillation term;
4. ``synth``    the model being adapted writes ``candidates`` thoughts per query through its own thinking path;
5. ``vote``     the committee keeps the candidate under which query + thought ranks the positive highest;
6. ``train``    LoRA on the starting model: InfoNCE + thought cross-entropy + distillation, checkpointed; by
   default the distillation term matches the teacher's scores of every passage in the batch, from a table of
   every training query against every training passage written at the start of the stage; the adapted model
   reads documents up to ``document_tokens`` (default: ``passage_tokens``, the length training read);
7. ``eval``     (``--eval`` only; the only stage that opens queries or judgments) before vs after, thinking and
   not, BM25 and all-MiniLM-L6-v2, with paired tests.

The adapted model is ``DIR/model``: a model folder like any other, its card naming the corpus.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from pathlib import Path

from o1_embedder.pipeline.adapt_config import ADAPT_STAGES, EARLIER_SETTINGS, AdaptConfig
from o1_embedder.pipeline.common import evaluate_models, progress, train_stage, writer_model
from o1_embedder.pipeline.runner import Run, RunError, Stage, log

__all__ = ["ADAPT_STAGES", "AdaptConfig", "adapt", "adapt_run"]

logger = logging.getLogger(__name__)

#: sampling temperature of the tries at a question after an unusable greedy one
RETRY_TEMPERATURE = 0.7


def _corpus(run: Run, config: AdaptConfig):
    """The corpus, checked against the one the run started with."""
    from o1_embedder.data.corpus import load_corpus

    corpus = load_corpus(config.corpus, min_documents=min_documents(config))
    recorded = run.record.get("corpus")
    if recorded and recorded.get("sha256") != corpus.sha256:
        raise RunError(f"{config.corpus} changed since {run.folder} started on it (sha256 {recorded['sha256'][:12]} "
                       f"-> {corpus.sha256[:12]}): use a new --out")
    return corpus


def min_documents(config: AdaptConfig) -> int:
    """In-batch negatives and mining need distinct documents: a batch's worth, and more than the negatives."""
    return max(config.batch_size, config.negatives + 2)


def visible_words(config: AdaptConfig) -> int:
    """About how many words of a passage training reads (``passage_tokens``, ~0.75 words per token): a question
    or a cut-out sentence comes from that part, so the positive the model sees holds what the query asks."""
    return max(20, int(config.passage_tokens * 0.75))


def _plan(corpus, config: AdaptConfig) -> list[tuple[int, str]]:
    """``(document index, kind)`` slots: documents in seeded order, kinds rotated, each document at most once
    per kind, until ``train_queries`` slots (kinds a document has none of are replaced by its next kind)."""
    from o1_embedder.synthesis.queries import inverse_cloze, title_query

    order = list(range(len(corpus)))
    random.Random(config.seed).shuffle(order)
    kinds = list(config.query_kinds)
    available = {}
    for i in order:
        has = {"question": True, "title": title_query(corpus.titles[i], corpus.texts[i]) is not None,
               "sentence": inverse_cloze(corpus.texts[i], random.Random(0),
                                         within_words=visible_words(config)) is not None}
        available[i] = [k for k in kinds if has[k]]
    slots: list[tuple[int, str]] = []
    used: dict[int, set[str]] = {i: set() for i in order}
    for round_ in range(len(kinds)):
        for position, i in enumerate(order):
            if len(slots) >= config.train_queries:
                return slots
            preferred = [kinds[(position + round_ + j) % len(kinds)] for j in range(len(kinds))]
            kind = next((k for k in preferred if k in available[i] and k not in used[i]), None)
            if kind is not None:
                used[i].add(kind)
                slots.append((i, kind))
    return slots


def _write_questions(run: Run, config: AdaptConfig, corpus, asked: list[int]) -> dict[str, dict]:
    """The ``questions.jsonl`` record (resumable) of each document in ``asked``, by id: its ``question`` is the
    greedy one (``raw``) or, where that is unusable, the first usable of up to ``question_retries`` seeded samples
    (``tries``); ``""`` if none is usable."""
    from o1_embedder.data.records import JsonlWriter
    from o1_embedder.generation.backends import GenerationRequest
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.generation.transformers_backend import TransformersBackend
    from o1_embedder.synthesis.queries import clean_question, question_prompt

    full = corpus.full_texts()
    questions: dict[str, dict] = {}
    with JsonlWriter(run.path("questions.jsonl"), key="query_id") as writer:
        questions.update({r["query_id"]: r for r in writer.existing})
        todo = [i for i in asked if corpus.ids[i] not in writer.done]
        if not todo:
            return questions
        model = writer_model(config.model, config.dtype)

        def backend(**sampling) -> TransformersBackend:
            settings = GenerationSettings(max_new_tokens=config.question_tokens, **sampling)
            return TransformersBackend(model[0].model, tokenizer=model[0].tokenizer, settings=settings,
                                       batch_size=config.writer_batch_size)

        greedy, sampler = backend(do_sample=False), backend(do_sample=True, temperature=RETRY_TEMPERATURE)
        bar = progress(len(asked), "queries: writing questions", "question")
        bar.update(len(asked) - len(todo))
        step = 4 * config.writer_batch_size
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            messages = {i: [{"role": "user", "content": question_prompt(full[i], max_words=visible_words(config))}]
                        for i in chunk}
            raw = {i: _texts(g)[:1] for i, g in zip(chunk, greedy.generate([GenerationRequest(messages[i])
                                                                            for i in chunk]))}
            retry = [i for i in chunk if not clean_question(raw[i][0])] if config.question_retries else []
            retried = sampler.generate([GenerationRequest(messages[i], n=config.question_retries,
                                                          seed=config.seed * 1_000_003 + i) for i in retry]
                                       ) if retry else []
            raw.update({i: raw[i] + _texts(g) for i, g in zip(retry, retried)})
            for i in chunk:
                record = {"query_id": corpus.ids[i], "raw": raw[i][0], "tries": raw[i][1:],
                          "question": next((q for q in map(clean_question, raw[i]) if q), "")}
                writer.write(record)
                questions[corpus.ids[i]] = record
            bar.update(len(chunk))
        bar.close()
    return questions


def _texts(generation) -> list[str]:
    """A generation's texts, ``[""]`` for a failed one."""
    return list(generation.texts) if generation.ok and generation.texts else [""]


def _round_trip(run: Run, config: AdaptConfig, corpus, written: list[int], questions: dict[str, str]
                ) -> dict[int, int]:
    """The teacher's rank of each written question's own document, for those within ``round_trip_k``."""
    from o1_embedder.synthesis.teacher import CorpusTeacher, parse_teacher

    if not written:
        return {}
    teacher = CorpusTeacher(corpus.full_texts(), parse_teacher(config.teacher)[0], show_progress_bar=True,
                            cache_dir=str(run.path("embedding-cache")))
    top, _ = teacher.search([questions[corpus.ids[i]] for i in written], config.round_trip_k)
    return {i: int(list(row).index(i)) + 1 for i, row in zip(written, top) if i in row}


def stage_queries(run: Run, config: AdaptConfig) -> None:
    """Stage 1: pseudo-queries (``questions.jsonl`` as written, ``queries.jsonl`` the kept ones)."""
    from o1_embedder.data.beir import document_text
    from o1_embedder.data.records import write_records_atomic
    from o1_embedder.files import atomic_write_text
    from o1_embedder.synthesis.queries import inverse_cloze, title_query

    corpus = _corpus(run, config)
    slots = _plan(corpus, config)
    asked = [i for i, kind in slots if kind == "question"]
    full = corpus.full_texts()
    written_records = _write_questions(run, config, corpus, asked)
    questions = {key: r["question"] for key, r in written_records.items()}
    written = [i for i in asked if questions.get(corpus.ids[i])]
    kept_rank = _round_trip(run, config, corpus, written, questions)

    rng = random.Random(f"{config.seed}-sentences")
    # a written question with tries came from a sampled try (tries follow an unusable greedy question only)
    resampled = sum(bool(written_records[corpus.ids[i]].get("tries")) for i in written)
    records, counts = [], {"question_written": len(written), "question_asked": len(asked),
                           "question_resampled": resampled}
    for i, kind in slots:
        if kind == "question":
            if i not in kept_rank:
                continue
            query, positive = questions[corpus.ids[i]], full[i]
        elif kind == "title":
            pair = title_query(corpus.titles[i], corpus.texts[i])
            if pair is None:  # the plan only gives documents with a usable title this kind
                continue
            query, positive = pair
        else:
            cut = inverse_cloze(corpus.texts[i], rng, within_words=visible_words(config))
            if cut is None:  # the plan only gives documents of 3+ sentences this kind
                continue
            query, positive = cut[0], document_text({"title": corpus.titles[i], "text": cut[1]})
        counts[kind] = counts.get(kind, 0) + 1
        records.append({"query_id": f"{corpus.ids[i]}#{kind}", "query": query, "pos": [positive], "kind": kind,
                        "doc_id": corpus.ids[i]})
    if not records:
        raise RunError("queries: no pseudo-query could be made from the corpus (no title, no document of 3+ "
                       "sentences, no question that passed the round trip)")
    write_records_atomic(run.path("pseudo_queries.jsonl"), records)
    report = {"documents": len(corpus), "planned": len(slots), "queries": len(records), "by_kind": counts,
              "round_trip_k": config.round_trip_k}
    atomic_write_text(run.path("pseudo_queries.json"), json.dumps(report, indent=2) + "\n")
    log(f"queries: {len(records)} pseudo-queries from {len(corpus)} documents: "
        + ", ".join(f"{counts.get(k, 0)} {k}" for k in config.query_kinds)
        + (f" ({len(kept_rank)} of {len(written)} written questions passed the round trip at top "
           f"{config.round_trip_k}; {resampled} written by a sampled try after an unusable greedy one)"
           if asked else ""))


def _teacher_corpus(corpus, records: list[dict]) -> tuple[list[str], dict[str, int]]:
    """The documents, then every training positive that is not one of them (a sentence or title cut out), so
    the teacher scores each positive as the model sees it; and each positive's index."""
    texts = corpus.full_texts()
    index = {t: i for i, t in enumerate(texts)}
    for record in records:
        index.setdefault(record["pos"][0], len(texts))
        if index[record["pos"][0]] == len(texts):
            texts.append(record["pos"][0])
    return texts, index


def stage_mine(run: Run, config: AdaptConfig) -> None:
    """Stage 2: hard negatives (``mined.jsonl``)."""
    from o1_embedder.data.records import RecordFile, write_records_atomic
    from o1_embedder.data.records import Stage as RecordStage
    from o1_embedder.synthesis.teacher import CorpusTeacher, parse_teacher

    corpus = _corpus(run, config)
    records = list(RecordFile(run.path("pseudo_queries.jsonl"), RecordStage.BASE))
    texts, index = _teacher_corpus(corpus, records)
    doc_index = {d: i for i, d in enumerate(corpus.ids)}
    teacher = CorpusTeacher(texts, parse_teacher(config.teacher)[0],
                            show_progress_bar=True, cache_dir=str(run.path("embedding-cache")))
    out, failed, short = [], 0, 0
    bar = progress(len(records), "mine", "query")
    chunk_size = 128
    for start in range(0, len(records), chunk_size):
        chunk = records[start:start + chunk_size]
        scores = teacher.scores([r["query"] for r in chunk])
        for row, record in zip(scores, chunk):
            own = doc_index[record["doc_id"]]
            positive = float(row[index[record["pos"][0]]])
            ceiling = positive - config.negative_margin * abs(positive)
            ranked = row[:len(corpus)].argsort()[::-1][:config.mine_depth + 1]
            negatives = [int(j) for j in ranked if j != own and row[j] < ceiling][:config.negatives]
            if not negatives:
                failed += 1
                continue
            short += len(negatives) < config.negatives
            out.append({**record, "neg": [texts[j] for j in negatives],
                        "mining": {"pos_index": index[record["pos"][0]], "neg_index": negatives}})
        bar.update(len(chunk))
    bar.close()
    if not out:
        raise RunError("mine: no query got a negative (the corpus is too small or too uniform)")
    write_records_atomic(run.path("mined.jsonl"), out)
    log(f"mine: {len(out)} queries with negatives ({short} with fewer than {config.negatives}); {failed} without "
        f"any are left out")


def stage_teacher(run: Run, config: AdaptConfig) -> None:
    """Stage 3: teacher scores of positive and negatives (``scored.jsonl``)."""
    from o1_embedder.data.records import RecordFile, write_records_atomic
    from o1_embedder.data.records import Stage as RecordStage
    from o1_embedder.synthesis.teacher import CorpusTeacher

    corpus = _corpus(run, config)
    records = list(RecordFile(run.path("mined.jsonl"), RecordStage.MINED))
    texts, _ = _teacher_corpus(corpus, list(RecordFile(run.path("pseudo_queries.jsonl"), RecordStage.BASE)))
    teacher = CorpusTeacher(texts, config.teacher, show_progress_bar=True, cache_dir=str(run.path("embedding-cache")))
    out = []
    bar = progress(len(records), "teacher", "query")
    chunk_size = 128
    for start in range(0, len(records), chunk_size):
        chunk = records[start:start + chunk_size]
        passages = [[r["mining"]["pos_index"], *r["mining"]["neg_index"]] for r in chunk]
        for record, values in zip(chunk, teacher.pair_scores([r["query"] for r in chunk], passages)):
            values = [round(v, 5) for v in values]
            out.append({**record, "pos_scores": values[:1], "neg_scores": values[1:]})
        bar.update(len(chunk))
    bar.close()
    write_records_atomic(run.path("scored.jsonl"), out)
    margins = [r["pos_scores"][0] - max(r["neg_scores"]) for r in out]
    log(f"teacher: {len(out)} queries scored by {', '.join(config.teacher)}; the positive above every negative "
        f"for {sum(m > 0 for m in margins)} of them")


def stage_synth(run: Run, config: AdaptConfig) -> None:
    """Stage 4: candidate thoughts written by the model being adapted (``candidates.jsonl``)."""
    from o1_embedder.data.records import RecordFile
    from o1_embedder.data.records import Stage as RecordStage
    from o1_embedder.synthesis.explore import synthesize
    from o1_embedder.synthesis.thinking_backend import QUERY_ONLY_PROMPT, ThinkingBackend

    records = RecordFile(run.path("scored.jsonl"), RecordStage.MINED)
    model = writer_model(config.model, config.dtype)
    settings = model[0].generation_settings.replace(do_sample=True, temperature=config.thought_temperature,
                                                    top_p=0.9, seed=config.seed)
    backend = ThinkingBackend(model, settings=settings, batch_size=config.writer_batch_size)
    report = synthesize(records, backend, run.path("candidates.jsonl"), num_candidates=config.candidates,
                        prompt=QUERY_ONLY_PROMPT, seed=config.seed, chunk_size=2 * config.writer_batch_size,
                        min_candidates=1, log=logger.info, show_progress_bar=True)
    log(f"synth: {report.summary()}")
    if report.failed:  # the model ends its thought at once for these: they are trained without one
        log(f"synth: the model wrote only empty thoughts for {len(report.failed)} queries (trained without one)")


def stage_vote(run: Run, config: AdaptConfig) -> None:
    """Stage 5: the committee keeps one candidate per query (``voted.jsonl``; ``train.jsonl`` the training file)."""
    from o1_embedder.data.records import RecordFile, write_records_atomic
    from o1_embedder.data.records import Stage as RecordStage
    from o1_embedder.synthesis.teacher import CorpusTeacher, parse_teacher
    from o1_embedder.synthesis.vote import vote

    corpus = _corpus(run, config)
    texts, _ = _teacher_corpus(corpus, list(RecordFile(run.path("pseudo_queries.jsonl"), RecordStage.BASE)))
    teacher = CorpusTeacher(texts, parse_teacher(config.teacher)[0], cache_dir=str(run.path("embedding-cache")))
    records = RecordFile(run.path("candidates.jsonl"), RecordStage.CANDIDATES)
    report = vote(records, teacher.committee(), run.path("voted.jsonl"), log=logger.info, show_progress_bar=True)
    log(f"vote: {report.summary()}")
    voted = {r["query_id"]: r for r in RecordFile(run.path("voted.jsonl"), RecordStage.TRAINING)}
    rows = [voted.get(r["query_id"], r) for r in RecordFile(run.path("scored.jsonl"), RecordStage.MINED)]
    write_records_atomic(run.path("train.jsonl"), rows)
    log(f"vote: {len(rows)} training records ({len(rows) - len(voted)} without a thought) in {run.path('train.jsonl')}")


def stage_train(run: Run, config: AdaptConfig) -> None:
    """Stage 6: LoRA training on the starting model (``model/``, ``adapter/``, checkpoints beside)."""
    train_config = config.train_config()
    if train_config.teacher_table is not None:
        _write_teacher_table(run, config, train_config.data, train_config.teacher_table)
    train_stage(run, train_config)
    _set_query_weight(run, config.query_weight)
    write_card(run, config)


def _write_teacher_table(run: Run, config: AdaptConfig, data: str, path: str) -> None:
    """The committee's scores of every training query against every training passage (``in_batch_distillation``),
    once: a resumed run keeps the table its checkpoints were trained with."""
    import numpy as np

    from o1_embedder.data.records import RecordFile
    from o1_embedder.data.records import Stage as RecordStage
    from o1_embedder.synthesis.teacher import CorpusTeacher, parse_teacher
    from o1_embedder.training.teacher_table import TeacherTable

    if Path(path).is_file():
        return
    records = list(RecordFile(data, RecordStage.MINED))
    texts, _ = _teacher_corpus(_corpus(run, config), list(RecordFile(run.path("pseudo_queries.jsonl"),
                                                                     RecordStage.BASE)))
    index = {t: i for i, t in enumerate(texts)}
    queries = list(dict.fromkeys(r["query"] for r in records))
    passages = list(dict.fromkeys(p for r in records for p in [r["pos"][0], *r["neg"]]))
    unknown = [p for p in passages if p not in index]
    if unknown:
        raise RunError(f"train: {len(unknown)} passages of {data} are not texts of the corpus the teacher scores "
                       f"(the data stages were run on another corpus?), for example {unknown[0][:80]!r}")
    columns = [index[p] for p in passages]
    teacher = CorpusTeacher(texts, parse_teacher(config.teacher)[0], cache_dir=str(run.path("embedding-cache")))
    bar = progress(len(queries), "teacher table", "query")
    rows = []
    for start in range(0, len(queries), 128):
        rows.append(teacher.scores(queries[start:start + 128])[:, columns])
        bar.update(len(rows[-1]))
    bar.close()
    TeacherTable.from_texts(queries, passages, np.concatenate(rows)).save(path)
    log(f"train: teacher scores of {len(queries)} queries against {len(passages)} passages in {path}")


def _set_query_weight(run: Run, weight: float) -> None:
    """Write the adapted model's query weight into its settings and its adapter's (training never reads it)."""
    from o1_embedder.files import atomic_write_text
    from o1_embedder.model.folder import CONFIG_FILE

    for folder in ("model", "adapter"):
        path = run.path(folder, CONFIG_FILE)
        if path.is_file():
            settings = json.loads(path.read_text(encoding="utf-8"))
            settings["query_weight"] = float(weight)
            atomic_write_text(path, json.dumps(settings, indent=4) + "\n")


def stage_eval(run: Run, config: AdaptConfig) -> None:
    """Stage 7 (``--eval``): before vs after on the corpus's own queries and judgments."""
    from o1_embedder.evaluation.job import resolve_dataset
    from o1_embedder.generation.cache import default_cache_dir
    from o1_embedder.model.loading import MINILM

    data = resolve_dataset(config.corpus, split=config.eval_split)
    evaluate_models(
        data, [("before", config.model), ("adapted", str(run.path("model")))], run.path("eval"),
        pairs=[("adapted (think)", "before (think)"), ("adapted (no think)", "before (no think)"),
               ("adapted (think)", "adapted (no think)"), ("adapted (think)", "BM25"),
               ("adapted (think)", MINILM)],
        cache_dir=default_cache_dir() / "embeddings",  # shared: the starting model's corpus is embedded once
        dtype=config.dtype, document_tokens=config.eval_document_tokens,
        title=f"{data.name}: {len(data.queries)} queries, {len(data.corpus)} documents (adapted on the documents only)")
    write_card(run, config)


# ------------------------------------------------------------------------------------------------ card
def write_card(run: Run, config: AdaptConfig) -> None:
    """Append the adaptation (corpus, counts, settings, stage times, scores) to the adapted model's card."""
    from o1_embedder.files import atomic_write_text

    card_path = run.path("model", "README.md")
    if not card_path.is_file():
        return
    card = card_path.read_text(encoding="utf-8").split("\n## Domain adaptation\n")[0].rstrip() + "\n"
    corpus = run.record.get("corpus", {})
    report = run.path("pseudo_queries.json")
    counts = json.loads(report.read_text()) if report.is_file() else {}
    lines = ["", "## Domain adaptation", "",
             f"Adapted from `{config.model}` with `o1-embedder adapt` on a corpus of {corpus.get('documents')} "
             f"documents ({corpus.get('words')} words, {corpus.get('layout')} layout, "
             f"sha256 `{corpus.get('sha256')}`),",
             "with no query and no judgment: pseudo-queries written from the documents, negatives and teacher scores",
             "from a committee, thoughts written by the model and chosen by the committee.", "",
             f"- pseudo-queries: {json.dumps(counts.get('by_kind', {}))} ({counts.get('queries')} kept of "
             f"{counts.get('planned')} planned)",
             f"- training records: {_lines(run.path('mined.jsonl'))} with hard negatives, "
             f"{_lines(run.path('scored.jsonl'))} with teacher scores, "
             f"{_count_thoughts(run.path('train.jsonl'))} with a thought chosen by the committee",
             f"- documents: {_reads(config)}",
             f"- settings: `{json.dumps(run.record.get('stages', {}), sort_keys=True)}`",
             f"- stage times (seconds): `{json.dumps(run.timings())}`"]
    results = run.path("eval", "results.md")
    if results.is_file():
        lines += ["", results.read_text(encoding="utf-8").replace("# ", "### ", 1)]
    atomic_write_text(card_path, card + "\n".join(lines) + "\n")


def _reads(config: AdaptConfig) -> str:
    if not config.document_tokens:
        return "read as the starting model reads them (its own truncation)"
    return (f"read up to {config.document_tokens} tokens, the length training read; set `max_document_tokens` "
            f"in o1_embedder_config.json to read more")


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.is_file() else 0


def _count_thoughts(path: Path) -> int:
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(1 for line in lines if json.loads(line).get("thought"))


# ------------------------------------------------------------------------------------------------- run
#: what each data stage leaves for the later ones (``--reuse`` copies these)
REUSABLE_FILES = {"queries": ["questions.jsonl", "pseudo_queries.jsonl", "pseudo_queries.json", "embedding-cache"],
                  "mine": ["mined.jsonl"], "teacher": ["scored.jsonl"], "synth": ["candidates.jsonl"],
                  "vote": ["voted.jsonl", "train.jsonl"]}


def check_eval_files(config: AdaptConfig) -> None:
    root = Path(config.corpus)
    needed = [root / "queries.jsonl", root / "qrels" / f"{config.eval_split}.tsv"]
    missing = [str(p) for p in needed if not p.is_file()]
    if not root.is_dir() or missing:
        raise RunError(f"--eval needs CORPUS to be a BEIR folder with queries and judgments; missing: "
                       f"{', '.join(missing) if root.is_dir() else root}")


def adapt_run(config: AdaptConfig) -> Run:
    """The run folder of ``config`` with its stages (nothing run yet)."""
    functions = {"queries": stage_queries, "mine": stage_mine, "teacher": stage_teacher, "synth": stage_synth,
                 "vote": stage_vote, "train": stage_train, "eval": stage_eval}
    settings = config.stage_settings()
    stages = [Stage(name, functools.partial(functions[name], config=config), settings[name],
                    earlier=EARLIER_SETTINGS.get(name, {})) for name in ADAPT_STAGES]
    return Run(config.folder, "adapt", stages)


def adapt(config: AdaptConfig) -> Path:
    """Run (or resume) every stage; returns the adapted model's folder. The corpus is read and checked before
    any model loads."""
    from o1_embedder.data.corpus import load_corpus

    run = adapt_run(config)
    corpus = load_corpus(config.corpus, min_documents=min_documents(config))
    recorded = run.record.get("corpus")
    if recorded and recorded.get("sha256") != corpus.sha256:
        raise RunError(f"{config.corpus} changed since {run.folder} started on it (sha256 {recorded['sha256'][:12]} "
                       f"-> {corpus.sha256[:12]}): use a new --out")
    if config.eval:  # only their presence: no stage before eval opens the queries or the judgments
        check_eval_files(config)
    if config.reuse and not run.path("run.json").is_file():
        source = Run(config.reuse, "adapt", [])
        if source.record.get("corpus", {}).get("sha256") != corpus.sha256:
            raise RunError(f"--reuse {config.reuse}: it was made from another corpus")
        run.record["corpus"] = source.record["corpus"]
        taken = run.take_from(source, REUSABLE_FILES)
        log(f"adapt: took the {', '.join(taken) or 'no'} stage(s) of {config.reuse}")
        recorded = run.record["corpus"]
    run.check_settings()
    if not recorded:
        from o1_embedder.files import atomic_write_text

        run.record["corpus"] = {"path": str(config.corpus), "layout": corpus.layout, "documents": len(corpus),
                                "words": corpus.words(), "sha256": corpus.sha256}
        run.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.path("run.json"), json.dumps(run.record, indent=2, sort_keys=True) + "\n")
    log(f"adapt: {len(corpus)} documents from {config.corpus} ({corpus.layout}); writing in "
        f"{config.resolved_dtype()}; run folder {run.folder}")
    if corpus.empty:
        log(f"adapt: {len(corpus.empty)} documents without any text are left out: {'; '.join(corpus.empty[:5])}"
            + (" ..." if len(corpus.empty) > 5 else ""))
    skip = [] if config.eval else ["eval"]
    if not config.candidates:
        skip += ["synth", "vote"]
    run.run(stop_after=config.stop_after, skip=skip)
    return run.path("model")
