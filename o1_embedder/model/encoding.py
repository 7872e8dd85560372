"""The forward computations: embed id sequences, and think-then-embed in one pass.

``think_and_embed`` reads the query embedding from the KV cache that generation already built: after
``generate`` returns, at most three tokens are fed on top of the cache (the last generated token, an
``eos`` for thoughts cut by ``max_new_tokens``, and ``<emb>``), with padding positions masked and
positions counted per row. The result equals re-encoding ``prompt + thought + eos + <emb>`` from
scratch (see ``tests/test_one_pass.py``) at the cost of one decoding step instead of a second forward
pass over the whole sequence.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def left_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists into ``(input_ids, attention_mask)`` so every row ends at the last column."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so left padding does not shift them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def decoder(lm):
    """The causal LM without its head (``LlamaModel`` inside ``LlamaForCausalLM``, also under peft)."""
    return lm.get_decoder() if hasattr(lm, "get_decoder") else lm.base_model


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
class GenerationSettings:
    """How thoughts are generated. ``do_sample=False`` is greedy decoding (temperature/top-p unused)."""

    max_new_tokens: int = 128
    do_sample: bool = True
    temperature: float = 0.1
    top_p: float = 0.9
    seed: int | None = 42

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0):
            raise ValueError(f"temperature must be > 0 when do_sample=True, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def generate_kwargs(self) -> dict:
        if self.do_sample:
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None}
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}

    def cache_key(self) -> str:
        sampling = f"sample:t={self.temperature!r},p={self.top_p!r},seed={self.seed!r}" if self.do_sample else "greedy"
        return f"{sampling};max_new={self.max_new_tokens}"


@dataclass
class ThinkResult:
    embeddings: torch.Tensor          # (n, hidden), L2-normalised, float32
    thought_ids: list[list[int]]      # generated thought tokens, without eos
    generated_tokens: int             # tokens produced by generation (thought + eos)


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device):
    """Seed torch's RNG for the block without disturbing the caller's RNG state."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def split_generated(generated: torch.Tensor, eos_id: int) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Split ``generate``'s new tokens into thoughts.

    Returns the thought ids (without eos), a mask of the generated tokens that belong to the sequence
    (thought + its eos; padding after eos excluded), and which rows ended with eos.
    """
    rows, steps = generated.shape
    is_eos = generated == eos_id
    finished = is_eos.any(dim=1)
    # Index of the token that ends each thought: the first eos, or the last step for unfinished rows.
    last = torch.full((rows,), steps - 1, dtype=torch.long, device=generated.device)
    end = torch.where(finished, is_eos.int().argmax(dim=1), last)
    generated_mask = (torch.arange(steps, device=generated.device)[None, :] <= end[:, None]).long()
    thought_ids = [generated[r, : end[r] + (0 if finished[r] else 1)].tolist() for r in range(rows)]
    return thought_ids, generated_mask, finished


@torch.no_grad()
def generate(lm, prompts: list[list[int]], *, settings: GenerationSettings, pad_id: int, eos_id: int,
             suppress_ids: list[int]):
    """Run ``lm.generate`` on left-padded prompts. Returns (generate output, prompt attention mask).

    The format's special tokens are suppressed so a thought never contains ``<emb>`` and the like.
    """
    ids, mask = left_pad(prompts, pad_id, lm.device)
    with seeded(settings.seed if settings.do_sample else None, lm.device):
        out = lm.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
            pad_token_id=pad_id, eos_token_id=eos_id, suppress_tokens=suppress_ids or None,
            return_dict_in_generate=True, use_cache=True, **settings.generate_kwargs(),
        )
    return out, mask


@torch.no_grad()
def think_and_embed(lm, prompts: list[list[int]], *, settings: GenerationSettings, pad_id: int, eos_id: int,
                    emb_id: int, suppress_ids: list[int]) -> ThinkResult:
    """Generate one thought per prompt and return the ``<emb>`` state read from generation's KV cache."""
    out, mask = generate(lm, prompts, settings=settings, pad_id=pad_id, eos_id=eos_id, suppress_ids=suppress_ids)
    generated = out.sequences[:, mask.shape[1]:]
    thought_ids, generated_mask, finished = split_generated(generated, eos_id)

    cache = out.past_key_values  # holds prompt + generated[:, :-1]
    tail = torch.stack([generated[:, -1], torch.full_like(generated[:, -1], eos_id),
                        torch.full_like(generated[:, -1], emb_id)], dim=1)
    tail_mask = torch.stack([generated_mask[:, -1], (~finished).long(), torch.ones_like(finished, dtype=torch.long)],
                            dim=1)
    full_mask = torch.cat([mask, generated_mask[:, :-1], tail_mask], dim=1)
    hidden = decoder(lm)(input_ids=tail, attention_mask=full_mask, position_ids=position_ids(full_mask)[:, -3:],
                         past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
    return ThinkResult(
        embeddings=F.normalize(hidden.float(), dim=-1),
        thought_ids=thought_ids,
        generated_tokens=int(generated_mask.sum().item()),
    )
