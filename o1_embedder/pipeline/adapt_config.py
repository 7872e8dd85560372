"""The settings of ``o1-embedder adapt`` (:class:`AdaptConfig`): every option, its checks, and what each stage's
output depends on (a resumed run refuses other values)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ADAPT_STAGES", "EARLIER_SETTINGS", "AdaptConfig"]

ADAPT_STAGES = ("queries", "mine", "teacher", "synth", "vote", "train", "eval")
#: the train stage's table of teacher scores (``in_batch_distillation``), in the run folder
TEACHER_TABLE = "teacher_table.npz"
#: what a run recorded before a setting existed stands for (a run trained then distilled each query's own group)
#: (document_tokens 0: it kept the starting model's document truncation)
EARLIER_SETTINGS = {"train": {"in_batch_distillation": False, "document_tokens": 0}}


def _opt(default, help: str, **metadata):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class AdaptConfig:
    """Every ``o1-embedder adapt`` option (one field each)."""

    corpus: str = field(metadata={"help": "the documents: a BEIR folder (only corpus.jsonl is read), a corpus "
                                          ".jsonl file, or a folder of .txt / .md files", "positional": True})
    out: str = field(metadata={"help": "run folder: every stage's output, resumable; the model is OUT/model"})
    model: str = _opt("o1-embedder", "o1-embedder model to adapt (folder, hub id, or the embedded default)")
    seed: int = _opt(0, "seed of query choice, sampling and training")
    dtype: str = _opt("auto", "weights' type for writing questions and thoughts, and mixed-precision training: "
                              "auto (bfloat16 where the CPU has AMX or AVX512-BF16, or on a GPU that supports it), "
                              "float32 or bfloat16", choices=("auto", "float32", "bfloat16"))
    # queries
    query_kinds: list[str] = _opt(["question", "title", "sentence"], "pseudo-query sources, rotated over documents")
    train_queries: int = _opt(1400, "training queries (at most one per document and kind; the default gives one to "
                                    "each document of a 1,400-document corpus, about 48 minutes on 2 CPU cores)")
    round_trip_k: int = _opt(3, "keep a written question when its document is in the teacher's top k")
    question_tokens: int = _opt(32, "new tokens of a written question")
    question_retries: int = _opt(3, "sampled questions (temperature 0.7, seeded) for a document whose greedy one is "
                                    "unusable: a repetition loop, no word of content, too short or too long")
    writer_batch_size: int = _opt(32, "rows generated together when writing questions and thoughts")
    # teacher and negatives
    teacher: list[str] = _opt(["bm25", "all-MiniLM-L6-v2"], "teacher committee: bm25 and Sentence-Transformers "
                                                            "bi-encoders (fused), and optionally cross-encoder:NAME")
    negatives: int = _opt(7, "hard negatives mined per query")
    mine_depth: int = _opt(30, "negatives come from the teacher's top this many documents")
    negative_margin: float = _opt(0.05, "skip a negative scored within this fraction of the positive's score")
    # thoughts
    candidates: int = _opt(2, "candidate thoughts per query written by the model (0: train without thoughts)")
    thought_temperature: float = _opt(0.7, "sampling temperature of the candidate thoughts")
    # training
    batch_size: int = _opt(16, "queries per training batch")
    train_negatives: int = _opt(1, "hard negatives per query in a batch")
    passage_tokens: int = _opt(128, "passage truncation in training")
    learning_rate: float = _opt(2e-3, "peak learning rate (chosen on a seeded half of Cranfield's queries: 1e-3, "
                                      "2e-3 and 4e-3 gave 0.297, 0.309 and 0.289 nDCG@10 thinking there, on the "
                                      "same data)")
    lora_r: int = _opt(16, "LoRA rank")
    lora_alpha: int = _opt(32, "LoRA alpha")
    epochs: float = _opt(1.0, "passes over the training queries")
    temperature: float = _opt(0.02, "InfoNCE temperature")
    contrastive_weight: float = _opt(0.8, "weight of the contrastive term")
    generation_weight: float = _opt(0.2, "weight of the thought cross-entropy term")
    distillation_weight: float = _opt(1.0, "weight of KL distillation from the teacher scores")
    teacher_temperature: float = _opt(1.0, "softmax temperature of the teacher scores")
    in_batch_distillation: bool = _opt(True, "distil from the teacher's scores of every passage in the batch (a "
                                             "table of every training query against every training passage, built "
                                             "at the start of training; chosen on a seeded half of Cranfield's "
                                             "queries: 0.325 nDCG@10 thinking there against 0.318 on the same "
                                             "records)",
                                       no_help="distil from each query's own positive and negatives only (needed "
                                               "with a cross-encoder teacher)")
    thought_dropout: float = _opt(0.1, "probability of training a query without its thought")
    query_weight: float = _opt(0.0, "weight of the query's own embedding in the adapted model's thinking query "
                                    "embedding (0: query + thought alone, as training embeds them; chosen on a "
                                    "seeded half of Cranfield's queries against the starting model's 0.5)")
    document_tokens: int | None = _opt(None, "the adapted model's document truncation in tokens (default: "
                                             "--passage-tokens, the length training read; chosen on a seeded half "
                                             "of Cranfield's queries: 0.334 nDCG@10 thinking there against 0.325 "
                                             "reading up to the starting model's own, 512 for the default; 0 keeps "
                                             "the starting model's)")
    save_steps: int = _opt(10, "checkpoint every N training steps")
    gradient_checkpointing: bool = _opt(True, "recompute activations in the backward pass",
                                        no_help="keep every activation for the backward pass: about 13 GB for "
                                                "16 queries of 128-token passages")
    checkpoint_every_n_layers: int = _opt(2, "with gradient checkpointing, recompute every N-th decoder layer only "
                                             "(for 16 queries of 128-token passages, 1: every layer, 3.9 GB; 2: "
                                             "half, 8.9 GB and 0.8-0.9x the time a step)")
    mini_batch_size: int | None = _opt(None, "GradCache mini-batch: the same loss and gradients with activation "
                                             "memory bounded by this many queries (slower)")
    # evaluation
    eval: bool = _opt(False, "evaluate before vs after on CORPUS's queries and judgments (a BEIR folder)")
    eval_split: str = _opt("test", "qrels split of the evaluation")
    eval_document_tokens: int | None = _opt(None, "document truncation in the evaluation (default: the model's)")
    stop_after: str | None = _opt(None, "stop after this stage", choices=ADAPT_STAGES)
    reuse: str | None = _opt(None, "take the complete data stages of another adapt run folder on the same corpus "
                                   "with the same settings (for training ablations)")

    def __post_init__(self) -> None:
        from o1_embedder.synthesis.queries import KINDS
        from o1_embedder.synthesis.teacher import parse_teacher

        for name in ("train_queries", "round_trip_k", "question_tokens", "writer_batch_size", "negatives",
                     "mine_depth", "batch_size", "passage_tokens", "lora_r", "lora_alpha"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("candidates", "train_negatives", "save_steps", "question_retries"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.candidates == 1:
            pass  # one candidate: no choice to make, the vote keeps it
        unknown = [k for k in self.query_kinds if k not in KINDS]
        if unknown or not self.query_kinds or len(set(self.query_kinds)) != len(self.query_kinds):
            raise ValueError(f"query_kinds must be distinct names among {', '.join(KINDS)}, got {self.query_kinds}")
        parse_teacher(self.teacher)
        if not 0 <= self.negative_margin < 1:
            raise ValueError(f"negative_margin must be in [0, 1), got {self.negative_margin}")
        if self.train_negatives > self.negatives:
            raise ValueError(f"train_negatives ({self.train_negatives}) is more than the mined negatives "
                             f"({self.negatives})")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.document_tokens is None:
            self.document_tokens = self.passage_tokens
        if not isinstance(self.document_tokens, int) or self.document_tokens < 0:
            raise ValueError(f"document_tokens must be an integer >= 0 (0: the starting model's), got "
                             f"{self.document_tokens!r}")
        if self.eval_document_tokens is not None and self.eval_document_tokens < 1:
            raise ValueError(f"eval_document_tokens must be >= 1, got {self.eval_document_tokens}")
        if self.stop_after is not None and self.stop_after not in ADAPT_STAGES:
            raise ValueError(f"stop_after must be one of {', '.join(ADAPT_STAGES)}, got {self.stop_after!r}")
        if not isinstance(self.query_weight, (int, float)) or not 0.0 <= self.query_weight <= 1.0:
            raise ValueError(f"query_weight must be in [0, 1], got {self.query_weight!r}")
        if self.thought_temperature <= 0:
            raise ValueError(f"thought_temperature must be > 0, got {self.thought_temperature}")
        if self.in_batch_distillation and parse_teacher(self.teacher)[1] is not None:
            raise ValueError("in_batch_distillation needs a teacher without a cross-encoder (the cross-encoder would "
                             "have to score every training query against every training passage): pass "
                             "--no-in-batch-distillation with a cross-encoder teacher")
        # training settings are checked by TrainConfig; build one now so a bad value fails before any stage
        self.train_config()

    # ---------------------------------------------------------------------------------------- derived
    @property
    def folder(self) -> Path:
        return Path(self.out)

    def resolved_dtype(self) -> str:
        from o1_embedder.dtypes import fast_dtype
        from o1_embedder.model.loading import DTYPE_ENV

        if self.dtype != "auto":
            return self.dtype
        fixed = os.environ.get(DTYPE_ENV, "auto")  # as load_model chooses for the writing models
        return fast_dtype() if fixed in ("", "auto") else fixed

    def train_config(self):
        from o1_embedder.training import TrainConfig

        out = self.folder
        return TrainConfig(
            data=str(out / "train.jsonl" if self.candidates else out / "scored.jsonl"), output=str(out / "model"),
            model=self.model, adapter_output=str(out / "adapter"), lora=True, lora_r=self.lora_r,
            lora_alpha=self.lora_alpha, lora_dropout=0.05, max_document_tokens=self.document_tokens or None,
            epochs=self.epochs, learning_rate=self.learning_rate,
            batch_size=self.batch_size, num_negatives=self.train_negatives, temperature=self.temperature,
            contrastive_weight=self.contrastive_weight, generation_weight=self.generation_weight,
            distillation_weight=self.distillation_weight, teacher_temperature=self.teacher_temperature,
            thought_dropout=self.thought_dropout, max_passage_tokens=self.passage_tokens, seed=self.seed,
            teacher_table=str(out / TEACHER_TABLE) if self.in_batch_distillation and self.distillation_weight > 0
            else None,
            logging_steps=1, warmup_ratio=0.05, save_steps=self.save_steps, resume=True,
            gradient_checkpointing=self.gradient_checkpointing,
            checkpoint_every_n_layers=self.checkpoint_every_n_layers, cached_mini_batch_size=self.mini_batch_size,
            bf16=self.dtype != "float32" and self.resolved_dtype() == "bfloat16")

    def stage_settings(self) -> dict[str, dict]:
        """What each stage's output depends on (a resumed run refuses other values)."""
        def pick(*names):
            return {n: getattr(self, n) for n in names}

        from o1_embedder.training.guard import RESUME_KEYS

        # what training's own resume check compares: not where files go, nor how activations are kept (the same
        # training in less memory or less time: a run killed for memory resumes with more checkpointing)
        train = {k: v for k, v in dataclasses.asdict(self.train_config()).items() if k in RESUME_KEYS}
        return {
            "queries": {**pick("model", "seed", "query_kinds", "train_queries", "round_trip_k", "question_tokens",
                               "question_retries", "passage_tokens", "teacher"), "writer_dtype": self.resolved_dtype()},
            "mine": pick("negatives", "mine_depth", "negative_margin"),
            "teacher": {},
            "synth": {**pick("candidates", "thought_temperature"), "writer_dtype": self.resolved_dtype()},
            "vote": {},
            "train": {**train, **pick("query_weight", "in_batch_distillation", "document_tokens")},
            "eval": pick("eval_split", "eval_document_tokens"),
        }
