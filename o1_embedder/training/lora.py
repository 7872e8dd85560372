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


def save_adapter(model, path, dtype=None):
    """Save the LoRA adapter (and the trained special-token rows) of a LoRA-wrapped o1-embedder model.

    The folder is peft's layout (``adapter_config.json``, ``adapter_model.safetensors``) plus the module's
    settings (``o1_embedder_config.json``), written to a temporary sibling and renamed into place.
    ``dtype`` (e.g. ``torch.float16``) stores the adapter tensors in that precision to save space.
    """
    import os
    import shutil
    from pathlib import Path

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from o1_embedder.files import staging_dir

    module = model[0]
    if not hasattr(module.model, "peft_config"):
        raise ValueError("the model has no LoRA adapter to save")
    target = Path(path)
    if target.exists() and not (target / "adapter_config.json").is_file():
        raise FileExistsError(f"{target} exists and is not an adapter folder: choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target, prefix=f".{target.name}-")
    try:
        module.model.peft_config["default"].save_pretrained(str(staging))
        # the special-token rows are the adapter's trainable-token deltas; the base model the adapter is applied to
        # already has the resized embedding, so the full embedding matrices are not stored (MBs, not 100s of MBs)
        state = get_peft_model_state_dict(module.model, save_embedding_layers=False)
        # clone: with tied input and output embeddings peft keeps one trained-token delta under two names, and
        # safetensors refuses tensors that share memory
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().clone()
                 for k, v in state.items()}
        save_file(state, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        module.save_config(str(staging))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target

