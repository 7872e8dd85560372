"""The decoding loop: every thought in the library is generated here.

:func:`decode` continues a batch of prompts (token-id lists) with a causal LM and, when asked, reads the
query embedding from the same KV cache. Compared with calling ``generate`` and re-encoding:

* **one prefill per distinct prompt**: rows that share a prompt (the K samples of a query, the N candidates
  of a synthesis request) are prefilled once and the KV cache is expanded to the rows;
* **finished rows leave the batch**: a row that has ended is dropped from the cache, so the decoding
  steps of the other rows no longer pay for it;
* **the embedding is read in passing**: a row that ends feeds its ``eos`` and then ``<emb>`` (a thought
  cut at ``max_new_tokens`` feeds ``eos`` first), and the final hidden state at ``<emb>`` is the
  embedding of ``prompt + thought + eos + <emb>``, the same as re-encoding that sequence (tested);
* **batch-independent sampling**: row ``i`` samples from its own generator seeded with ``row_seeds[i]``
  (temperature, then top-p), so a thought depends on its prompt and seed only, never on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from o1_embedder.generation.settings import GenerationSettings

__all__ = ["Decoded", "decode", "left_pad", "position_ids", "sample_rows"]


@dataclass
class Decoded:
    """What :func:`decode` returns, one entry per prompt row."""

    token_ids: list[list[int]]          # generated tokens without the ending eos
    finished: list[bool]                # ended with an eos (False: cut at max_new_tokens)
    generated_tokens: int               # tokens sampled, eos included
    embeddings: torch.Tensor | None     # (rows, hidden) L2-normalised ``<emb>`` states, float32, when asked
    steps: int = 0                      # forward passes after the prefill


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


def sample_rows(logits: torch.Tensor, settings: GenerationSettings, generators: list[torch.Generator] | None
                ) -> torch.Tensor:
    """One token per row: greedy argmax, or temperature + top-p sampling with each row's own generator
    (transformers' temperature and top-p warpers, then one multinomial draw per row)."""
    if not settings.do_sample:
        return logits.argmax(dim=-1)
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(settings.temperature)(None, logits.float())
    if settings.top_p < 1.0:
        scores = TopPLogitsWarper(settings.top_p)(None, scores)
    probs = torch.softmax(scores, dim=-1)
    return torch.cat([torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(generators)])


@torch.no_grad()
def decode(lm, prompts: list[list[int]], *, settings: GenerationSettings, pad_id: int, eos_ids: list[int],
           suppress_ids: list[int] = (), row_seeds: list[int] | None = None, emb_id: int | None = None
           ) -> Decoded:
    """Continue every prompt with at most ``settings.max_new_tokens`` tokens (see the module docstring).

    Args:
        prompts: token ids per row; rows with equal prompts share one prefill.
        eos_ids: tokens that end a thought; the first is the one fed (and appended for cut thoughts) before
            ``<emb>`` when embedding.
        suppress_ids: tokens never generated (the format's special tokens).
        row_seeds: one seed per row (required when sampling).
        emb_id: when given, also return the ``<emb>`` embedding of ``prompt + thought + eos + <emb>``.
    """
    if not prompts:
        return Decoded([], [], 0, None)
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if settings.do_sample and (row_seeds is None or len(row_seeds) != len(prompts)):
        raise ValueError(f"sampling needs one seed per row: {0 if row_seeds is None else len(row_seeds)} seeds for "
                         f"{len(prompts)} prompts")
    eos_ids = list(eos_ids)
    if not eos_ids:
        raise ValueError("decoding needs an eos token")
    device = lm.device
    rows = len(prompts)
    hidden_size = lm.config.get_text_config().hidden_size

    # 1. One prefill per distinct prompt, expanded to the rows.
    distinct: dict[tuple[int, ...], int] = {}
    row_prompt = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    unique = [list(p) for p in distinct]
    ids, mask = left_pad(unique, pad_id, device)
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.config)
    body = decoder(lm)
    out = body(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), past_key_values=cache,
               use_cache=True)
    cache = out.past_key_values
    index = torch.tensor(row_prompt, device=device)
    if len(unique) != rows or row_prompt != list(range(rows)):
        cache.batch_select_indices(index)
    mask = mask[index]
    hidden = out.last_hidden_state[index, -1]

    head = lm.get_output_embeddings()
    suppress = torch.tensor(sorted(set(suppress_ids)), dtype=torch.long, device=device) if suppress_ids else None
    eos = torch.tensor(eos_ids, device=device)
    generators = ([torch.Generator(device=device).manual_seed(int(s)) for s in row_seeds]
                  if settings.do_sample else None)

    tokens: list[list[int]] = [[] for _ in range(rows)]
    finished = [False] * rows
    embeddings = torch.zeros(rows, hidden_size, device=device) if emb_id is not None else None
    generated = 0
    steps = 0
    # Per active row (the cache's batch order): its row number, and its phase:
    # 0 sampling; 1 the pending input is the eos that ends the thought; 2 the pending input is <emb>.
    active = torch.arange(rows, device=device)
    phase = torch.zeros(rows, dtype=torch.long, device=device)
    pending = torch.full((rows,), pad_id, dtype=torch.long, device=device)
    to_sample = torch.ones(rows, dtype=torch.bool, device=device)  # the prefill's last state predicts a token
    while True:
        # a. Rows whose input was <emb> are done: their hidden state is the embedding.
        done = phase == 2
        if embeddings is not None and steps > 0 and done.any():
            embeddings[active[done]] = hidden[done].float()
        # b. Sample for rows that are still thinking.
        next_phase = phase.clone()
        if to_sample.any():
            sampling_rows = to_sample.nonzero().flatten()
            logits = head(hidden[sampling_rows])
            if suppress is not None:
                logits[:, suppress] = float("-inf")
            row_ids = active[sampling_rows].tolist()
            choice = sample_rows(logits, settings, [generators[r] for r in row_ids] if generators else None)
            generated += len(row_ids)
            ended = torch.isin(choice, eos)
            for r, token, end in zip(row_ids, choice.tolist(), ended.tolist()):
                if end:
                    finished[r] = True
                else:
                    tokens[r].append(token)
            pending[sampling_rows] = torch.where(ended, eos[0], choice)
            next_phase[sampling_rows] = ended.long()  # an eos goes in as the thought's end (phase 1)
            if emb_id is None:  # without an embedding to read, a thought at the length limit is done
                full = torch.tensor([len(tokens[r]) >= settings.max_new_tokens for r in row_ids], device=device)
                next_phase[sampling_rows[full]] = 3
        # c. Rows at the length limit stop sampling: their last token, then eos, then <emb>.
        counts = torch.tensor([len(tokens[r]) for r in active.tolist()], device=device)
        cut = (phase == 0) & ~to_sample & (counts >= settings.max_new_tokens)
        pending[cut] = eos[0]
        next_phase[cut] = 1
        closing = (phase == 1) & ~to_sample
        pending[closing] = emb_id if emb_id is not None else pad_id
        next_phase[closing] = 2
        next_phase[done] = 3
        if emb_id is None:  # no embedding: a row is done when its thought ends
            next_phase[next_phase >= 1] = 3
        # d. Drop the rows that are done, once there are enough of them to pay for copying the cache; until
        #    then they ride along masked out.
        live = next_phase != 3
        if not live.any():
            break
        dead = int((~live).sum())
        if dead >= max(4, len(live) // 8):
            kept = live.nonzero().flatten()
            cache.batch_select_indices(kept)
            active, pending, next_phase, mask = active[kept], pending[kept], next_phase[kept], mask[kept]
            live = live[kept]
        pending = torch.where(live, pending, torch.full_like(pending, pad_id))
        phase = next_phase
        # e. Feed one token per row.
        positions = mask.sum(dim=1, keepdim=True)
        mask = torch.cat([mask, live.long()[:, None]], dim=1)
        out = body(input_ids=pending[:, None], attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True)
        cache = out.past_key_values
        hidden = out.last_hidden_state[:, -1]
        steps += 1
        counts = torch.tensor([len(tokens[r]) for r in active.tolist()], device=device)
        to_sample = (phase == 0) & (counts < settings.max_new_tokens)
    if embeddings is not None:
        embeddings = F.normalize(embeddings, dim=-1)
    return Decoded(tokens, finished, generated, embeddings, steps)
