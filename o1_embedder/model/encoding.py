"""The forward computations: embed id sequences, and think-then-embed in one pass.

``think_and_embed`` reads the query embedding from the KV cache that generation already built: after
``generate`` returns, at most three tokens are fed on top of the cache (the last generated token, an
``eos`` for thoughts cut by ``max_new_tokens``, and ``<emb>``), with padding positions masked and
positions counted per row. The result equals re-encoding ``prompt + thought + eos + <emb>`` from
scratch (see ``tests/test_one_pass.py``) at the cost of one decoding step instead of a second forward
pass over the whole sequence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper


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


    def cache_key(self) -> str:
        sampling = f"sample:t={self.temperature!r},p={self.top_p!r},seed={self.seed!r}" if self.do_sample else "greedy"
        return f"{sampling};max_new={self.max_new_tokens}"


@dataclass
class ThinkResult:
    embeddings: torch.Tensor          # (n, hidden), L2-normalised, float32
    thought_ids: list[list[int]]      # generated thought tokens, without eos
    generated_tokens: int             # tokens produced by generation (thought + eos)


class RowSampler(LogitsProcessor):
    """Samples every row from its own seeded generator (temperature, then top-p), batch-independently.

    A row's thought depends only on its seed, never on which other queries share the batch or in which
    order they come, so a thought is determined by (query, sample index, seed) exactly as the thought
    cache keys it. Returns scores that are ``-inf`` except at the sampled token, so greedy selection
    in ``generate`` picks it.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.temperature = TemperatureLogitsWarper(temperature)
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = self.temperature(input_ids, scores.float())
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        choice = torch.cat([torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(choice), device=scores.device), choice] = 0.0
        return out


def sample_seed(seed: int | None, *parts: str) -> int:
    """The seed of one row: derived from the settings' seed and the row's identity (query text, sample index)."""
    if seed is None:
        return int(torch.randint(0, 2**62, (1,)).item())
    digest = hashlib.sha256("\x1f".join((str(seed), *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**62 - 1)


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
             suppress_ids: list[int], row_seeds: list[int] | None = None):
    """Run ``lm.generate`` on left-padded prompts. Returns (generate output, prompt attention mask).

    The format's special tokens are suppressed so a thought never contains ``<emb>`` and the like.
    With sampling, row ``i`` is sampled from its own generator seeded with ``row_seeds[i]`` (default:
    derived from the settings' seed and the row's prompt ids).
    """
    ids, mask = left_pad(prompts, pad_id, lm.device)
    processors = LogitsProcessorList()
    if settings.do_sample:
        if row_seeds is None:
            row_seeds = [sample_seed(settings.seed, ",".join(map(str, p))) for p in prompts]
        if len(row_seeds) != len(prompts):
            raise ValueError(f"{len(row_seeds)} row seeds for {len(prompts)} prompts")
        processors.append(RowSampler(row_seeds, settings.temperature, settings.top_p, lm.device))
    out = lm.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens, pad_token_id=pad_id,
        eos_token_id=eos_id, suppress_tokens=suppress_ids or None, return_dict_in_generate=True, use_cache=True,
        do_sample=False, temperature=None, top_p=None, top_k=None, logits_processor=processors,
    )
    return out, mask


@torch.no_grad()
def think_and_embed(lm, prompts: list[list[int]], *, settings: GenerationSettings, pad_id: int, eos_id: int,
                    emb_id: int, suppress_ids: list[int], row_seeds: list[int] | None = None) -> ThinkResult:
    """Generate one thought per prompt and return the ``<emb>`` state read from generation's KV cache."""
    out, mask = generate(lm, prompts, settings=settings, pad_id=pad_id, eos_id=eos_id, suppress_ids=suppress_ids,
                         row_seeds=row_seeds)
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
