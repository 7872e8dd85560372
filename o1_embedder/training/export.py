"""A training checkpoint as a model folder: ``o1-embedder export CHECKPOINT OUT``.

A checkpoint of :class:`~o1_embedder.training.trainer.JointTrainer` holds only the trained tensors
(``trainable.safetensors``: LoRA matrices and special-token rows, or every weight in full fine-tuning). The run's
settings kept beside the checkpoints (``train_run.json``: the starting model and the LoRA settings) rebuild the
model it belongs to; the tensors are loaded, the adapters merged, and the result saved as a plain model folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["export_checkpoint"]


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, *, force: bool = False) -> Path:
    """Save the model of ``checkpoint`` (a ``checkpoint-N`` folder) as a model folder at ``output``."""
    import torch
    from safetensors.torch import load_file

    from o1_embedder.model.loading import build_model, check_model_target, load_model, save_model
    from o1_embedder.training.guard import RUN_FILE
    from o1_embedder.training.lora import add_lora, merge_lora
    from o1_embedder.training.trainer import TRAINABLE_FILE

    checkpoint = Path(checkpoint)
    tensors_file = checkpoint / TRAINABLE_FILE
    settings_file = checkpoint.parent / RUN_FILE
    if not tensors_file.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a training checkpoint of o1-embedder (no {TRAINABLE_FILE})")
    if not settings_file.is_file():
        raise FileNotFoundError(f"{settings_file} is missing: the run's settings (starting model, LoRA) are needed "
                                f"to rebuild the model")
    check_model_target(output, force=force, inputs=(str(checkpoint),))
    settings = json.loads(settings_file.read_text(encoding="utf-8"))
    model = build_model(settings["backbone"]) if settings.get("backbone") else \
        load_model(settings["model"], dtype="float32")
    if settings.get("lora", True):
        add_lora(model, r=settings["lora_r"], alpha=settings["lora_alpha"], dropout=settings.get("lora_dropout", 0.0))
    saved = load_file(tensors_file)
    # named as the trainer names them: the SentenceTransformer's parameters
    params = {name: p for name, p in model.named_parameters() if p.requires_grad or name in saved}
    missing = sorted(set(saved) - set(params))
    if missing:
        raise ValueError(f"{tensors_file} does not fit the model of {settings_file} (unknown tensors {missing[:3]})")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].dtype))
    merge_lora(model)
    return save_model(model, output, force=force)
