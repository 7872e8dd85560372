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
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    output: str
    model: str = "o1-embedder"          # an o1-embedder model folder / hub id, or the embedded default
    backbone: str | None = None         # or a plain causal LM to start from (special tokens added)
    lora: bool = True
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 1e-4
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_negatives: int = 7
    temperature: float = 0.02
    contrastive_weight: float = 0.8
    generation_weight: float = 0.2
    distillation_weight: float = 0.0
    cached_mini_batch_size: int | None = None  # GradCache-style loss with this mini-batch size
    thought_dropout: float = 0.1
    bf16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    logging_steps: int = 10
    warmup_ratio: float = 0.0  # fraction of the steps (given to the trainer as a float warmup_steps)
    max_passage_tokens: int | None = None  # truncate passages in training only (the saved model keeps its own)
    max_thought_tokens: int | None = None  # truncate thoughts in training (default: the model's max_new_tokens)
    save_steps: int = 0                 # keep a checkpoint every N steps in OUTPUT.checkpoints/ (0: none)
    resume: bool = False                # continue from the latest checkpoint in OUTPUT.checkpoints/
    adapter_output: str | None = None   # also save the LoRA adapter (peft layout, safetensors) here


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def load_for_training(config: TrainConfig):
    from o1_embedder.model.loading import build_model, load_model

    model_kwargs = {"dtype": torch.bfloat16} if config.bf16 else None
    if config.backbone:
        return build_model(config.backbone, model_kwargs=model_kwargs)
    return load_model(config.model, **({"model_kwargs": model_kwargs} if model_kwargs else {}))


def train(config: TrainConfig) -> TrainResult:
    """Train and save. Under ``torchrun`` every rank trains and rank 0 saves. Returns the folder and the logs."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    from o1_embedder.model.loading import save_model
    from o1_embedder.training.collator import JointCollator
    from o1_embedder.training.data import load_training_data
    from o1_embedder.training.lora import add_lora, merge_lora, save_adapter
    from o1_embedder.training.loss import CachedJointLoss, JointLoss
    from o1_embedder.training.trainer import JointTrainer

    if config.lora is False and config.adapter_output:
        raise ValueError("adapter_output needs LoRA training (lora=True)")
    from transformers import set_seed

    dataset = load_training_data(config.data)
    set_seed(config.seed)  # LoRA's initial matrices come from the global RNG: a run is reproducible in any process
    model = load_for_training(config)
    module = model[0]
    saved_document_tokens = module.max_document_tokens
    if config.max_passage_tokens is not None:
        model.max_seq_length = config.max_passage_tokens
    if config.lora:
        add_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    collator = JointCollator(module, num_negatives=config.num_negatives, thought_dropout=config.thought_dropout,
                             max_thought_tokens=config.max_thought_tokens, seed=config.seed)
    weights = dict(temperature=config.temperature, contrastive_weight=config.contrastive_weight,
                   generation_weight=config.generation_weight, distillation_weight=config.distillation_weight)
    loss = (CachedJointLoss(model, mini_batch_size=config.cached_mini_batch_size, **weights)
            if config.cached_mini_batch_size else JointLoss(model, **weights))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = SentenceTransformerTrainingArguments(
        output_dir=checkpoint_folder(config.output), num_train_epochs=config.epochs,
        max_steps=config.max_steps, learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, warmup_steps=config.warmup_ratio,
        bf16=config.bf16,
        seed=config.seed, logging_steps=config.logging_steps, report_to=[],
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        dataloader_drop_last=distributed, use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False if distributed else None,
        **({"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
           if config.gradient_checkpointing else {}),
    )
    trainer = JointTrainer(model=model, args=args, train_dataset=dataset, loss=loss, data_collator=collator)
    checkpoint = latest_checkpoint(args.output_dir) if config.resume else None
    if checkpoint:
        print(f"resuming from {checkpoint}", flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    logger.info("rank %d finished training: %s", _rank(), trainer.state.log_history[-1])
    print(f"rank {_rank()} finished training after {trainer.state.global_step} steps", flush=True)
    output = Path(config.output)
    if trainer.is_world_process_zero():
        model.max_seq_length = saved_document_tokens
        if config.adapter_output:
            save_adapter(model, config.adapter_output)
        if config.lora:
            merge_lora(model)
        save_model(model, output)
        staging = output / ".training_config.json.tmp"
        staging.write_text(json.dumps(asdict(config), indent=2) + "\n")
        os.replace(staging, output / "training_config.json")
    if distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return TrainResult(output, list(trainer.state.log_history))


def checkpoint_folder(output: str | os.PathLike) -> str:
    """Where the checkpoints of a run that saves to ``output`` go: a sibling ``OUTPUT.checkpoints`` folder
    (the final model replaces ``output`` as a whole when it is saved)."""
    return os.path.normpath(str(output)) + ".checkpoints"


def latest_checkpoint(folder: str) -> str | None:
    """The ``checkpoint-N`` folder with the highest N that holds a complete checkpoint, or ``None``."""
    from o1_embedder.training.trainer import TRAINABLE_FILE

    if not os.path.isdir(folder):
        return None
    steps = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit() and \
                os.path.isfile(os.path.join(path, TRAINABLE_FILE)) and \
                os.path.isfile(os.path.join(path, "trainer_state.json")):
            steps.append((int(name[len("checkpoint-"):]), path))
    return max(steps)[1] if steps else None


@dataclass
class TrainResult:
    path: Path
    log_history: list[dict]
