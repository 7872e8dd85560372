"""The forward computations of the module: embed complete id sequences, and think-then-embed.

Thinking runs in the library's one decoding loop (:func:`o1_embedder.generation.decode`): the query
embedding is read from the KV cache that generation builds, by feeding ``eos`` and ``<emb>`` after the
thought (see ``tests/test_one_pass.py``: equal to re-encoding ``prompt + thought + eos + <emb>``), at the
cost of one or two decoding steps instead of a second forward pass over the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from o1_embedder.generation.decoding import decode, decoder, left_pad, position_ids
from o1_embedder.generation.settings import GenerationSettings

__all__ = ["GenerationSettings", "ThinkResult", "decoder", "embed_sequences", "last_hidden", "left_pad",
           "position_ids", "think_and_embed"]


def last_hidden(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final-layer hidden state at the last column (the ``<emb>`` token of left-padded rows)."""
    out = decoder(lm)(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids(attention_mask), use_cache=False)
    return out.last_hidden_state[:, -1]


def embed_sequences(lm, sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    """L2-normalised ``<emb>`` states of complete sequences (documents, no-thought queries, cached thoughts)."""
    ids, mask = left_pad(sequences, pad_id, lm.device)
    return F.normalize(last_hidden(lm, ids, mask).float(), dim=-1)


@dataclass
class ThinkResult:
    embeddings: torch.Tensor          # (n, hidden), L2-normalised, float32
    thought_ids: list[list[int]]      # generated thought tokens, without eos
    generated_tokens: int             # tokens produced by generation (thought + eos)
    prompt_embeddings: torch.Tensor | None = None  # (n, hidden) of ``prompt + <emb>``, when asked


@torch.no_grad()
def think_and_embed(lm, prompts: list[list[int]], *, settings: GenerationSettings, pad_id: int, eos_id: int,
                    emb_id: int, suppress_ids: list[int], row_seeds: list[int] | None = None,
                    prompt_embeddings: bool = False) -> ThinkResult:
    """Generate one thought per prompt and return the ``<emb>`` state read from generation's KV cache (and, with
    ``prompt_embeddings``, the no-thought embedding ``prompt + <emb>`` read in the prefill)."""
    out = decode(lm, prompts, settings=settings, pad_id=pad_id, eos_ids=[eos_id], suppress_ids=suppress_ids,
                 row_seeds=row_seeds, emb_id=emb_id, prompt_embeddings=prompt_embeddings)
    return ThinkResult(embeddings=out.embeddings, thought_ids=out.token_ids, generated_tokens=out.generated_tokens,
                       prompt_embeddings=out.prompt_embeddings)
