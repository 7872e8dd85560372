"""LoRA through peft, with the format's special-token rows trainable, and merge-back for saving."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def add_lora(model, r: int = 32, alpha: int = 64, dropout: float = 0.05,
             target_modules: str | list[str] = "all-linear", train_special_tokens: bool = True):
    """Wrap the backbone of an o1-embedder ``SentenceTransformer`` with LoRA adapters (in place).

    ``target_modules="all-linear"`` targets every projection layer (q, k, v, o, gate, up, down), as the
    reference does. With ``train_special_tokens`` the embedding rows of ``<query>``, ``</query>``,
    ``<thought>`` and ``<emb>`` are trained too (peft's ``trainable_token_indices``): LoRA alone would
    leave them at their initial values.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    module = model[0]
    if hasattr(module.model, "peft_config"):
        raise ValueError("the model already has adapters")
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
        trainable_token_indices=sorted(set(module.special_token_ids)) if train_special_tokens else None,
    )
    module.model = get_peft_model(module.model, config)
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.model.parameters())
    logger.info("LoRA r=%d alpha=%d on %s: %d of %d parameters trainable", r, alpha, target_modules, trainable, total)
    return model


def merge_lora(model):
    """Merge adapters (and trained token rows) into the backbone, so the model saves as a plain folder."""
    module = model[0]
    if hasattr(module.model, "merge_and_unload"):
        module.model = module.model.merge_and_unload()
    return model
