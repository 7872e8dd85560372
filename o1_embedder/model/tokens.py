"""Special tokens: add them once, initialise their embedding rows from the mean of the existing rows."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def ensure_pad_token(tokenizer) -> None:
    """Backbones without a pad token pad with eos. Padding is always masked, so this is safe."""
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError("The tokenizer has neither a pad_token nor an eos_token; set tokenizer.pad_token first")
    logger.info("Tokenizer has no pad token; padding with eos token %r (always masked)", tokenizer.eos_token)
    tokenizer.pad_token = tokenizer.eos_token


@torch.no_grad()
def add_special_tokens(model, tokenizer, tokens: list[str]) -> list[str]:
    """Add the missing ``tokens`` and set their input (and untied output) rows to the mean of the old rows.

    Returns the tokens that were added. Tokens the tokenizer already knows keep their trained rows, so a
    released checkpoint that already has them is left untouched.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if not missing:
        return []
    old_len = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    new_ids = tokenizer.convert_tokens_to_ids(missing)
    input_emb = model.get_input_embeddings()
    if len(tokenizer) > input_emb.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        input_emb = model.get_input_embeddings()
    # Rows beyond the tokenizer's old length may be padding rows of the checkpoint: average only real ones.
    real_rows = min(old_len, input_emb.weight.shape[0])
    input_emb.weight[new_ids] = input_emb.weight[:real_rows].mean(dim=0, keepdim=True).to(input_emb.weight.dtype)
    output_emb = model.get_output_embeddings()
    if output_emb is not None and output_emb.weight.data_ptr() != input_emb.weight.data_ptr():
        output_emb.weight[new_ids] = output_emb.weight[:real_rows].mean(dim=0, keepdim=True)
        if getattr(output_emb, "bias", None) is not None:
            output_emb.bias[new_ids] = output_emb.bias[:real_rows].mean()
    return missing
