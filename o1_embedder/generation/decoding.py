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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from o1_embedder.generation.settings import GenerationSettings

__all__ = ["Decoded", "decode", "left_pad", "position_ids"]


@dataclass
class Decoded:
    """What :func:`decode` returns, one entry per prompt row."""

    token_ids: list[list[int]]          # generated tokens without the ending eos
    finished: list[bool]                # ended with an eos (False: cut at max_new_tokens)
    generated_tokens: int               # tokens sampled, eos included
    embeddings: torch.Tensor | None     # (rows, hidden) L2-normalised ``<emb>`` states, float32, when asked
    steps: int = 0                      # forward passes after the prefill
    prompt_embeddings: torch.Tensor | None = None  # (rows, hidden) ``prompt + <emb>`` states, when asked


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


SAMPLE, CUT, CLOSE, EMB, DEAD = range(5)


def _choose(hidden: torch.Tensor, members: list[list[int]], phase: list[int], head, suppress, settings,
            generators) -> dict[int, int]:
    """The next token of every row of every sampling slot: the LM head runs once per slot; greedy rows take
    its argmax, sampling rows draw from it with their own generators."""
    slots = [slot for slot, state in enumerate(phase) if state == SAMPLE]
    if not slots:
        return {}
    logits = head(hidden[slots])
    if suppress is not None:
        logits[:, suppress] = float("-inf")
    chosen: dict[int, int] = {}
    if not settings.do_sample:
        for slot, token in zip(slots, logits.argmax(dim=-1).tolist()):
            for row in members[slot]:
                chosen[row] = token
        return chosen
    probs = _sampling_probs(logits, settings)
    for position, slot in enumerate(slots):
        for row in members[slot]:
            chosen[row] = int(torch.multinomial(probs[position], 1, generator=generators[row]))
    return chosen


def _sampling_probs(logits: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """Temperature, then top-p (transformers' warpers), then softmax."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(settings.temperature)(None, logits.float())
    if settings.top_p < 1.0:
        scores = TopPLogitsWarper(settings.top_p)(None, scores)
    return torch.softmax(scores, dim=-1)


@torch.no_grad()
def decode(lm, prompts: list[list[int]], *, settings: GenerationSettings, pad_id: int, eos_ids: list[int],
           suppress_ids: Sequence[int] = (), row_seeds: list[int] | None = None, emb_id: int | None = None,
           prompt_embeddings: bool = False) -> Decoded:
    """Continue every prompt with at most ``settings.max_new_tokens`` tokens (see the module docstring).

    Args:
        prompts: token ids per row; rows with equal prompts share one prefill.
        eos_ids: tokens that end a thought; the first is the one fed (and appended for cut thoughts) before
            ``<emb>`` when embedding.
        suppress_ids: tokens never generated (the format's special tokens).
        row_seeds: one seed per row (required when sampling).
        emb_id: when given, also return the ``<emb>`` embedding of ``prompt + thought + eos + <emb>``.
        prompt_embeddings: also return the embedding of ``prompt + <emb>`` (the query without a thought), read
            in the prefill: ``<emb>`` is appended to every prompt there and cropped from the KV cache after.
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

    # Slots are the rows of the KV cache. Rows whose sequences are identical so far share one slot: the K
    # samples of a query share its prefill and every step until their sampled tokens differ (at a low
    # temperature, often most of the thought); a slot forks when its rows choose different tokens.
    from transformers import DynamicCache

    distinct: dict[tuple[int, ...], int] = {}
    row_slot = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    ids, mask = left_pad([list(p) for p in distinct], pad_id, device)
    body = decoder(lm)
    if prompt_embeddings and emb_id is None:
        raise ValueError("prompt_embeddings needs emb_id")
    prefill_ids, prefill_mask = ids, mask
    if prompt_embeddings:  # prompt + <emb>: the query's own embedding, then <emb> is cropped from the cache
        column = torch.ones(len(distinct), 1, dtype=mask.dtype, device=device)
        prefill_ids, prefill_mask = torch.cat([ids, column * emb_id], dim=1), torch.cat([mask, column], dim=1)
    out = body(input_ids=prefill_ids, attention_mask=prefill_mask, position_ids=position_ids(prefill_mask),
               past_key_values=DynamicCache(config=lm.config), use_cache=True)
    cache = out.past_key_values
    hidden = out.last_hidden_state[:, -1]
    plain = None
    if prompt_embeddings:  # causal attention: the prompt's states never saw <emb>; the thought continues them
        cache.crop(-1)
        plain = F.normalize(hidden.float(), dim=-1)[torch.tensor(row_slot, device=device)]
        hidden = out.last_hidden_state[:, -2]

    head = lm.get_output_embeddings()
    suppress = torch.tensor(sorted(set(suppress_ids)), dtype=torch.long, device=device) if suppress_ids else None
    eos_set = set(eos_ids)
    generators = ([torch.Generator(device=device).manual_seed(int(s)) for s in row_seeds]
                  if settings.do_sample else None)

    tokens: list[list[int]] = [[] for _ in range(rows)]
    finished = [False] * rows
    embeddings = torch.zeros(rows, hidden_size, device=device) if emb_id is not None else None
    generated = 0
    steps = 0
    # Per slot: its rows, its phase (SAMPLE: the state predicts a token; CUT / CLOSE: the pending input is the
    # eos that ends the thought; EMB: the pending input is <emb>; DEAD: done, riding along masked out until
    # enough slots are done to pay for compacting the cache), its token count and its pending input.
    members: list[list[int]] = [[] for _ in distinct]
    for row, slot in enumerate(row_slot):
        members[slot].append(row)
    phase = [SAMPLE] * len(members)
    count = [0] * len(members)
    while True:
        slots = len(members)
        chosen = _choose(hidden, members, phase, head, suppress, settings, generators)
        # New slots, each with the cache row it continues from.
        source: list[int] = []
        new_members: list[list[int]] = []
        new_phase: list[int] = []
        new_count: list[int] = []
        new_pending: list[int] = []

        def keep(slot: int, rows_: list[int], phase_: int, count_: int, pending_: int) -> None:
            # called only within this step, so the lists it appends to are this step's
            source.append(slot)  # noqa: B023
            new_members.append(rows_)  # noqa: B023
            new_phase.append(phase_)  # noqa: B023
            new_count.append(count_)  # noqa: B023
            new_pending.append(pending_)  # noqa: B023

        for slot in range(slots):
            state = phase[slot]
            if state == DEAD:
                keep(slot, members[slot], DEAD, count[slot], pad_id)
            elif state == EMB:  # the input was <emb>: its state is the embedding of every row of the slot
                assert embeddings is not None  # EMB is only reached when embeddings are asked for
                for row in members[slot]:
                    embeddings[row] = hidden[slot].float()
                keep(slot, members[slot], DEAD, count[slot], pad_id)
            elif state == CLOSE:
                keep(slot, members[slot], EMB, count[slot], emb_id)
            elif state == CUT:  # at the length limit: eos, then <emb>
                keep(slot, members[slot], CLOSE, count[slot], eos_ids[0])
            else:  # SAMPLE: group the slot's rows by the token they chose
                groups: dict[int, list[int]] = {}
                for row in members[slot]:
                    groups.setdefault(chosen[row], []).append(row)
                for token, rows_ in groups.items():
                    generated += len(rows_)
                    if token in eos_set:
                        for row in rows_:
                            finished[row] = True
                        keep(slot, rows_, CLOSE if emb_id is not None else DEAD, count[slot], eos_ids[0])
                        continue
                    for row in rows_:
                        tokens[row].append(token)
                    full = count[slot] + 1 >= settings.max_new_tokens
                    if full and emb_id is None:
                        keep(slot, rows_, DEAD, count[slot] + 1, pad_id)
                    else:
                        keep(slot, rows_, CUT if full else SAMPLE, count[slot] + 1, token)
        live = [state != DEAD for state in new_phase]
        if not any(live):
            break
        # Reorganise the cache when a slot forked, or when enough slots are done to pay for the copy.
        forked = len(source) != len(set(source))
        dead = len(live) - sum(live)
        if forked or dead >= max(4, len(live) // 8):
            picks = [i for i, alive in enumerate(live) if alive]
            index = [source[i] for i in picks]
            if index != list(range(slots)):
                cache.batch_select_indices(torch.tensor(index, device=device))
                mask = mask[index]
            new_members = [new_members[i] for i in picks]
            new_phase = [new_phase[i] for i in picks]
            new_count = [new_count[i] for i in picks]
            new_pending = [new_pending[i] for i in picks]
            live = [True] * len(picks)
        members, phase, count = new_members, new_phase, new_count
        # Feed one token per slot (done slots feed padding, masked out).
        live_column = torch.tensor(live, dtype=torch.long, device=device)[:, None]
        positions = mask.sum(dim=1, keepdim=True)
        mask = torch.cat([mask, live_column], dim=1)
        out = body(input_ids=torch.tensor(new_pending, device=device)[:, None], attention_mask=mask,
                   position_ids=positions, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        hidden = out.last_hidden_state[:, -1]
        steps += 1
    if embeddings is not None:
        embeddings = F.normalize(embeddings, dim=-1)
    return Decoded(tokens, finished, generated, embeddings, steps, plain)
