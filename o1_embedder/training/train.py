"""The training entry point behind ``o1-embedder train``; runs as one process or under ``torchrun``.

    o1-embedder train data.jsonl --output out/ [--model o1-embedder | --backbone HUB_ID_OR_PATH] [--no-lora]
    torchrun --nproc_per_node 2 -m o1_embedder.cli train data.jsonl --output out/   # CPU: gloo

It loads (or builds) the model, adds LoRA (special-token rows trainable), trains with
``SentenceTransformerTrainer`` + :class:`JointCollator` + :class:`JointLoss`, merges the adapters and
saves a plain model folder (safetensors) that loads like any o1-embedder model.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def _opt(default, help: str):
    """A dataclass field with its command-line help (``o1-embedder train`` options are generated from these)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything ``o1-embedder train`` can set; each field is one command-line option."""

    data: str = field(metadata={"help": "training records (JSON lines: query, pos, neg, thought [, pos_scores, "
                                        "neg_scores])", "positional": True})
    output: str = field(metadata={"help": "folder for the trained (merged) model"})
    model: str = _opt("o1-embedder", "o1-embedder model folder or hub id to start from (default: the embedded one)")
    backbone: str | None = _opt(None, "start from a plain causal LM instead (hub id or folder; special tokens added)")
    lora: bool = field(default=True, metadata={"help": "train LoRA adapters and the special-token rows",
                                               "no_help": "full fine-tuning of every weight instead of LoRA"})
    lora_r: int = _opt(32, "LoRA rank")
    lora_alpha: int = _opt(64, "LoRA alpha")
    lora_dropout: float = _opt(0.05, "LoRA dropout")
    epochs: float = _opt(1.0, "passes over the data")
    max_steps: int = _opt(-1, "stop after this many optimizer steps (-1: by epochs)")
    learning_rate: float = _opt(1e-4, "peak learning rate")
    warmup_ratio: float = _opt(0.0, "fraction of the steps with a linear warmup")
    batch_size: int = _opt(8, "queries per batch and process")
    gradient_accumulation_steps: int = _opt(1, "batches per optimizer step")
    num_negatives: int = _opt(7, "hard negatives per query (0: in-batch negatives only)")
    temperature: float = _opt(0.02, "InfoNCE temperature")
    contrastive_weight: float = _opt(0.8, "weight of the contrastive term")
    generation_weight: float = _opt(0.2, "weight of the thought cross-entropy term")
    distillation_weight: float = _opt(0.0, "weight of KL distillation from the records' teacher scores")
    teacher_temperature: float = _opt(1.0, "softmax temperature of the teacher scores in the distillation term")
    teacher_table: str | None = _opt(None, "teacher scores of every training query against every training passage "
                                           "(.npz, o1_embedder.training.teacher_table): distil over every passage "
                                           "of the batch, not only each query's own positive and negatives")
    cached_mini_batch_size: int | None = _opt(None, "GradCache-style loss: encode in mini-batches of this size "
                                                    "(large batches on small memory)")
    thought_dropout: float = _opt(0.1, "probability of training a query without its thought")
    max_passage_tokens: int | None = _opt(None, "truncate passages in training only (the saved model keeps its own)")
    max_document_tokens: int | None = _opt(None, "the saved model's document truncation (default: the starting "
                                                 "model's own; checked against its context before training)")
    max_thought_tokens: int | None = _opt(None, "truncate thoughts in training (default: the model's max_new_tokens)")
    bf16: bool = _opt(False, "mixed precision: bfloat16 matrix products, float32 weights and optimizer state "
                             "(faster on CPUs with AMX or AVX512-BF16: 1.4x per step in "
                             "benchmarks/train_step.py --bf16; the saved model stays float32)")
    gradient_checkpointing: bool = _opt(False, "recompute activations in the backward pass (less memory)")
    checkpoint_every_n_layers: int = _opt(1, "with gradient_checkpointing: recompute every N-th decoder layer only "
                                             "and keep the others' activations (1: every layer, least memory; 2: "
                                             "half of them, 0.8-0.9x the time a step)")
    seed: int = _opt(42, "seed of LoRA initialisation, data order, negatives and thought dropout")
    logging_steps: int = _opt(10, "log every N steps")
    report_to: str = _opt("none", "where the trainer reports: none, tensorboard, wandb, ... (comma separated)")
    eval_data: str | None = _opt(None, "held-out records (same format): nDCG@10 without thinking during training")
    eval_steps: int = _opt(50, "evaluate the held-out records every N steps")
    save_steps: int = _opt(0, "keep a checkpoint every N steps in OUTPUT.checkpoints/ (0: none)")
    resume: bool = _opt(False, "continue from the latest checkpoint in OUTPUT.checkpoints/")
    adapter_output: str | None = _opt(None, "also save the LoRA adapter (peft layout, safetensors) here")
    force: bool = _opt(False, "replace an OUTPUT folder that is not an o1-embedder model folder")

    def __post_init__(self) -> None:
        for name in ("lora_r", "lora_alpha", "batch_size", "gradient_accumulation_steps", "logging_steps",
                     "eval_steps", "checkpoint_every_n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_negatives", "save_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("thought_dropout", "lora_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:  # the trainer reads a value of 1 or more as a number of steps
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("learning_rate", "epochs", "temperature", "teacher_temperature"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):  # NaN fails too
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        for name in ("contrastive_weight", "generation_weight", "distillation_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.contrastive_weight + self.generation_weight + self.distillation_weight == 0:
            raise ValueError("contrastive_weight, generation_weight and distillation_weight are all 0: "
                             "nothing to train")
        if self.teacher_table is not None and self.distillation_weight == 0:
            raise ValueError("teacher_table needs distillation_weight > 0 (the table is what the distillation "
                             "term learns from)")
        for name in ("cached_mini_batch_size", "max_passage_tokens", "max_thought_tokens", "max_document_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 when given, got {getattr(self, name)}")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def load_for_training(config: TrainConfig):
    from o1_embedder.model.loading import build_model, load_model

    # Weights stay in their saved precision; ``bf16`` is the trainer's autocast, so LoRA, the special-token rows
    # and AdamW's state keep float32 (bfloat16 weights would round away most of a small update).
    if config.backbone:
        return build_model(config.backbone)
    return load_model(config.model, dtype="float32")


def _check_targets(config: TrainConfig) -> tuple[str | None, ...]:
    """Before any work: the output folders can be written and hold none of the inputs. Returns the inputs read."""
    from o1_embedder.model.loading import check_model_target

    if config.lora is False and config.adapter_output:
        raise ValueError("adapter_output needs LoRA training (lora=True)")
    starts = (config.model if os.path.isdir(str(config.model)) else None,
              config.backbone if config.backbone and os.path.isdir(config.backbone) else None)
    # an input inside the output folder would be deleted with it
    read = starts + (config.data, config.eval_data, config.teacher_table)
    check_model_target(config.output, force=config.force, inputs=read)  # before any work, not after training
    if config.adapter_output:
        from o1_embedder.files import check_creatable

        check_creatable(config.adapter_output, "adapter_output")
        if os.path.isfile(config.adapter_output):
            raise ValueError(f"adapter_output {config.adapter_output} is a file; name a folder")
    return read


def _training_arguments(config: TrainConfig) -> Any:
    """Sentence-Transformers' training arguments of ``config`` (checkpoints beside the output folder)."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return SentenceTransformerTrainingArguments(
        output_dir=checkpoint_folder(config.output), num_train_epochs=config.epochs,
        max_steps=config.max_steps, learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, warmup_steps=config.warmup_ratio,
        bf16=config.bf16,
        seed=config.seed, logging_steps=config.logging_steps,
        report_to=[] if config.report_to in ("", "none") else [r.strip() for r in config.report_to.split(",")],
        eval_strategy="steps" if config.eval_data else "no", eval_steps=config.eval_steps,
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        dataloader_drop_last=distributed, use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False if distributed else None,
        **({"activation_checkpointing": True,
            "activation_checkpointing_kwargs": {"use_reentrant": False,
                                                "every_n_layers": config.checkpoint_every_n_layers}}
           if config.gradient_checkpointing else {}),
    )


def _loss(model: Any, config: TrainConfig) -> Any:
    """The joint loss of ``config`` (GradCache's when a mini-batch size is set)."""
    from o1_embedder.training.loss import CachedJointLoss, JointLoss

    weights = dict(temperature=config.temperature, contrastive_weight=config.contrastive_weight,
                   generation_weight=config.generation_weight, distillation_weight=config.distillation_weight,
                   teacher_temperature=config.teacher_temperature)
    return (CachedJointLoss(model, mini_batch_size=config.cached_mini_batch_size, **weights)
            if config.cached_mini_batch_size else JointLoss(model, **weights))


def _teacher_table(config: TrainConfig, dataset: Any) -> Any:
    """The teacher table of ``config``, checked to score every query against every passage of the data (before
    any model loads); ``None`` without one."""
    from o1_embedder.training.teacher_table import TeacherTable

    if config.teacher_table is None:
        return None
    table = TeacherTable.load(config.teacher_table)
    passages = set(dataset["positive"])
    for negatives in dataset["negatives"]:
        passages.update(negatives)
    queries, missing = table.missing(dict.fromkeys(dataset["anchor"]), passages)
    if queries or missing:
        example = (f"the query {queries[0][:80]!r}" if queries else f"the passage {missing[0][:80]!r}")
        raise ValueError(f"teacher table {config.teacher_table} does not cover {config.data}: {len(queries)} "
                         f"queries and {len(missing)} passages have no score, for example {example}")
    return table


def _save(model: Any, config: TrainConfig, read: tuple[str | None, ...], document_tokens: int | None) -> None:
    """The adapter (if asked), then the merged model and its training settings."""
    from o1_embedder.files import atomic_write_text
    from o1_embedder.model.loading import save_model
    from o1_embedder.training.lora import merge_lora, save_adapter

    model.max_seq_length = document_tokens
    if config.adapter_output:
        save_adapter(model, config.adapter_output)
    if config.lora:
        merge_lora(model)
    output = save_model(model, config.output, force=config.force, inputs=read)
    atomic_write_text(Path(output) / "training_config.json", json.dumps(asdict(config), indent=2) + "\n")


def train(config: TrainConfig) -> TrainResult:
    """Train and save. Under ``torchrun`` every rank trains and rank 0 saves. Returns the folder and the logs."""
    from transformers import set_seed

    from o1_embedder.training.collator import JointCollator
    from o1_embedder.training.data import load_training_data
    from o1_embedder.training.guard import check_collapse, check_resume, probe
    from o1_embedder.training.lora import add_lora
    from o1_embedder.training.trainer import JointTrainer

    read = _check_targets(config)
    dataset = load_training_data(config.data, require_negatives=config.num_negatives > 0)
    table = _teacher_table(config, dataset)
    evaluator = None
    if config.eval_data:  # validated before the model is loaded, like the training data
        from o1_embedder.training.evaluator import heldout_evaluator

        evaluator = heldout_evaluator(config.eval_data)
    set_seed(config.seed)  # LoRA's initial matrices come from the global RNG: a run is reproducible in any process
    model = load_for_training(config)
    module = model[0]
    if config.max_document_tokens is not None:  # fails here, not after training, beyond the backbone's context
        model.max_seq_length = config.max_document_tokens
    saved_document_tokens = module.max_document_tokens
    if config.max_passage_tokens is not None:
        model.max_seq_length = config.max_passage_tokens
    if config.lora:
        add_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    collator = JointCollator(module, num_negatives=config.num_negatives, thought_dropout=config.thought_dropout,
                             max_thought_tokens=config.max_thought_tokens, seed=config.seed, teacher_table=table)
    args = _training_arguments(config)
    trainer = JointTrainer(model=model, args=args, train_dataset=dataset, loss=_loss(model, config),
                           data_collator=collator, evaluator=evaluator)
    checkpoint = latest_checkpoint(args.output_dir) if config.resume else None
    if _rank() == 0:
        check_resume(config, args.output_dir, checkpoint)
    if checkpoint:
        print(f"resuming from {checkpoint}", flush=True)
    elif config.resume:
        print(f"--resume: no complete checkpoint in {args.output_dir}; training starts from the beginning", flush=True)
    probe_texts = list(dict.fromkeys(dataset["positive"]))[:16]
    before = probe(model, probe_texts)
    trainer.train(resume_from_checkpoint=checkpoint)
    logger.info("rank %d finished training: %s", _rank(), trainer.state.log_history[-1])
    print(f"rank {_rank()} finished training after {trainer.state.global_step} steps", flush=True)
    check_collapse(before, probe(model, probe_texts), trainer.state.log_history, config.learning_rate,
                   str(config.output))
    if trainer.is_world_process_zero():
        _save(model, config, read, saved_document_tokens)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return TrainResult(Path(config.output), list(trainer.state.log_history))


def checkpoint_folder(output: str | os.PathLike) -> str:
    """Where the checkpoints of a run that saves to ``output`` go: a sibling ``OUTPUT.checkpoints`` folder
    (the final model replaces ``output`` as a whole when it is saved)."""
    return os.path.normpath(str(output)) + ".checkpoints"


def latest_checkpoint(folder: str) -> str | None:
    """The ``checkpoint-N`` folder with the highest N whose files all read back (a damaged newer one is named
    and skipped), or ``None``."""
    from o1_embedder.training.guard import complete_checkpoints

    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


@dataclass
class TrainResult:
    path: Path
    log_history: list[dict]
