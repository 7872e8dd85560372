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


@dataclass
class _Slots:
    """The rows of the KV cache for the next step. Per slot: the cache row it continues (``source``), its prompt
    rows (``members``), its phase (SAMPLE: the state predicts a token; CUT / CLOSE: the pending input is the eos
    that ends the thought; EMB: the pending input is <emb>; DEAD: done, riding along masked out until enough
    slots are done to pay for compacting the cache), its token count and the input it feeds next."""

    source: list[int]
    members: list[list[int]]
    phase: list[int]
    count: list[int]
    pending: list[int]

    @classmethod
    def empty(cls) -> _Slots:
        return cls([], [], [], [], [])

    def add(self, source: int, members: list[int], phase: int, count: int, pending: int) -> None:
        self.source.append(source)
        self.members.append(members)
        self.phase.append(phase)
        self.count.append(count)
        self.pending.append(pending)

    def pick(self, indices: list[int]) -> _Slots:
        return _Slots(*([values[i] for i in indices] for values in (self.source, self.members, self.phase,
                                                                      self.count, self.pending)))


class _Decoding:
    """The state of one :func:`decode` call: the KV cache, its mask and last hidden states, the slots, and what
    each prompt row has produced. :func:`decode` drives it: prefill, then advance / compact / feed per step."""

    def __init__(self, lm, prompts: list[list[int]], *, settings: GenerationSettings, pad_id: int,
                 eos_ids: list[int], suppress_ids: Sequence[int], row_seeds: list[int] | None, emb_id: int | None):
        self.lm, self.body, self.settings = lm, decoder(lm), settings
        self.pad_id, self.eos_ids, self.eos_set, self.emb_id = pad_id, eos_ids, set(eos_ids), emb_id
        self.device = device = lm.device
        rows = len(prompts)
        self.head = lm.get_output_embeddings()
        self.suppress = (torch.tensor(sorted(set(suppress_ids)), dtype=torch.long, device=device)
                         if suppress_ids else None)
        self.generators = ([torch.Generator(device=device).manual_seed(int(s)) for s in row_seeds or []]
                           if settings.do_sample else None)
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.finished = [False] * rows
        hidden_size = lm.config.get_text_config().hidden_size
        self.embeddings = torch.zeros(rows, hidden_size, device=device) if emb_id is not None else None
        self.generated = 0
        self.steps = 0
        self.plain: torch.Tensor | None = None
        # Rows whose sequences are identical so far share one slot: the K samples of a query share its prefill
        # and every step until their sampled tokens differ; a slot forks when its rows choose different tokens.
        distinct: dict[tuple[int, ...], int] = {}
        self.row_slot = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        self.distinct = [list(p) for p in distinct]
        self.slots = _Slots.empty()
        for slot in range(len(self.distinct)):
            self.slots.add(slot, [], SAMPLE, 0, pad_id)
        for row, slot in enumerate(self.row_slot):
            self.slots.members[slot].append(row)

    def prefill(self, prompt_embeddings: bool) -> None:
        """One forward pass over the distinct prompts (with ``<emb>`` appended when the prompts' own embeddings
        are asked for: read there, then cropped from the cache, which causal attention allows)."""
        from transformers import DynamicCache

        ids, self.mask = left_pad(self.distinct, self.pad_id, self.device)
        prefill_ids, prefill_mask = ids, self.mask
        if prompt_embeddings:
            column = torch.ones(len(self.distinct), 1, dtype=self.mask.dtype, device=self.device)
            prefill_ids = torch.cat([ids, column * self.emb_id], dim=1)
            prefill_mask = torch.cat([self.mask, column], dim=1)
        out = self.body(input_ids=prefill_ids, attention_mask=prefill_mask, position_ids=position_ids(prefill_mask),
                        past_key_values=DynamicCache(config=self.lm.config), use_cache=True)
        self.cache = out.past_key_values
        self.hidden = out.last_hidden_state[:, -1]
        if prompt_embeddings:
            self.cache.crop(-1)
            self.plain = F.normalize(self.hidden.float(), dim=-1)[torch.tensor(self.row_slot, device=self.device)]
            self.hidden = out.last_hidden_state[:, -2]

    def advance(self) -> bool:
        """Choose every sampling slot's next token and lay out the next step's slots; ``False`` when every slot
        is done."""
        current = self.slots
        chosen = _choose(self.hidden, current.members, current.phase, self.head, self.suppress, self.settings,
                         self.generators)
        nxt = _Slots.empty()
        for slot, (rows, state, count) in enumerate(zip(current.members, current.phase, current.count)):
            if state == DEAD:
                nxt.add(slot, rows, DEAD, count, self.pad_id)
            elif state == EMB:  # the input was <emb>: its state is the embedding of every row of the slot
                assert self.embeddings is not None  # EMB is only reached when embeddings are asked for
                for row in rows:
                    self.embeddings[row] = self.hidden[slot].float()
                nxt.add(slot, rows, DEAD, count, self.pad_id)
            elif state == CLOSE:
                nxt.add(slot, rows, EMB, count, self.emb_id if self.emb_id is not None else self.pad_id)
            elif state == CUT:  # at the length limit: eos, then <emb>
                nxt.add(slot, rows, CLOSE, count, self.eos_ids[0])
            else:
                self._sampled(slot, rows, count, chosen, nxt)
        self.slots = nxt
        return any(state != DEAD for state in nxt.phase)

    def _sampled(self, slot: int, rows: list[int], count: int, chosen: dict[int, int], nxt: _Slots) -> None:
        """A sampling slot's rows grouped by the token they chose: each group continues in a slot of its own."""
        groups: dict[int, list[int]] = {}
        for row in rows:
            groups.setdefault(chosen[row], []).append(row)
        embedding = self.emb_id is not None
        for token, group in groups.items():
            self.generated += len(group)
            if token in self.eos_set:
                for row in group:
                    self.finished[row] = True
                nxt.add(slot, group, CLOSE if embedding else DEAD, count, self.eos_ids[0])
                continue
            for row in group:
                self.tokens[row].append(token)
            full = count + 1 >= self.settings.max_new_tokens
            if full and not embedding:
                nxt.add(slot, group, DEAD, count + 1, self.pad_id)
            else:
                nxt.add(slot, group, CUT if full else SAMPLE, count + 1, token)

    def compact(self) -> None:
        """Reorganise the cache when a slot forked, or when enough slots are done to pay for the copy."""
        slots = self.slots
        live = [state != DEAD for state in slots.phase]
        forked = len(slots.source) != len(set(slots.source))
        dead = len(live) - sum(live)
        if not (forked or dead >= max(4, len(live) // 8)):
            return
        picks = [i for i, alive in enumerate(live) if alive]
        index = [slots.source[i] for i in picks]
        if index != list(range(self.cache_rows)):
            self.cache.batch_select_indices(torch.tensor(index, device=self.device))
            self.mask = self.mask[index]
        self.slots = slots.pick(picks)
        self.slots.source = list(range(len(picks)))

    @property
    def cache_rows(self) -> int:
        return self.mask.shape[0]

    def feed(self) -> None:
        """One token per slot (done slots feed padding, masked out)."""
        live = torch.tensor([state != DEAD for state in self.slots.phase], dtype=torch.long, device=self.device)
        positions = self.mask.sum(dim=1, keepdim=True)
        self.mask = torch.cat([self.mask, live[:, None]], dim=1)
        out = self.body(input_ids=torch.tensor(self.slots.pending, device=self.device)[:, None],
                        attention_mask=self.mask, position_ids=positions, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.hidden = out.last_hidden_state[:, -1]
        self.slots.source = list(range(len(self.slots.phase)))
        self.steps += 1

    def result(self) -> Decoded:
        embeddings = F.normalize(self.embeddings, dim=-1) if self.embeddings is not None else None
        return Decoded(self.tokens, self.finished, self.generated, embeddings, self.steps, self.plain)


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
    if not eos_ids:
        raise ValueError("decoding needs an eos token")
    if prompt_embeddings and emb_id is None:
        raise ValueError("prompt_embeddings needs emb_id")
    state = _Decoding(lm, prompts, settings=settings, pad_id=pad_id, eos_ids=list(eos_ids), suppress_ids=suppress_ids,
                      row_seeds=row_seeds, emb_id=emb_id)
    state.prefill(prompt_embeddings)
    while state.advance():
        state.compact()
        state.feed()
    return state.result()
