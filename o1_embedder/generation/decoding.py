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
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

from o1_embedder.generation.settings import GenerationSettings

__all__ = ["DecodeStream", "Decoded", "decode", "left_pad", "position_ids"]


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
    """The state of decoding: the KV cache, its mask and last hidden states, the slots, and what each prompt row
    has produced. :func:`decode` drives it (add, then advance / compact / feed per step); :class:`DecodeStream`
    also adds rows between steps, their prefill merged into the running cache."""

    def __init__(self, lm, *, settings: GenerationSettings, pad_id: int, eos_ids: list[int],
                 suppress_ids: Sequence[int], emb_id: int | None):
        self.lm, self.body, self.settings = lm, decoder(lm), settings
        self.pad_id, self.eos_ids, self.eos_set, self.emb_id = pad_id, eos_ids, set(eos_ids), emb_id
        self.device = device = lm.device
        self.head = lm.get_output_embeddings()
        self.suppress = (torch.tensor(sorted(set(suppress_ids)), dtype=torch.long, device=device)
                         if suppress_ids else None)
        self.rows = 0                                   # rows added so far; a row's id is its position
        self.generators: dict[int, torch.Generator] = {}
        self.tokens: dict[int, list[int]] = {}
        self.finished: dict[int, bool] = {}
        self.embeddings: dict[int, torch.Tensor] = {}  # row -> ``<emb>`` state (float32, not normalised)
        self.plain: dict[int, torch.Tensor] = {}       # row -> normalised ``prompt + <emb>`` state
        self.done: list[int] = []                       # rows that ended since the caller last took them
        self.generated = 0
        self.steps = 0
        self.slots = _Slots.empty()
        self.cache: Any = None
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=device)
        self.hidden = torch.zeros(0, lm.config.get_text_config().hidden_size, device=device)

    @property
    def live(self) -> bool:
        return any(state != DEAD for state in self.slots.phase)

    def add(self, prompts: list[list[int]], row_seeds: list[int] | None, prompt_embeddings: bool) -> list[int]:
        """Prefill ``prompts`` (one forward pass over the distinct ones) and make them slots of the next step;
        returns their row ids. Rows whose sequences are identical so far share one slot: the K samples of a query
        share its prefill and every step until their sampled tokens differ (a slot forks when its rows choose
        different tokens). With ``prompt_embeddings``, ``<emb>`` is appended in the prefill, its state read, and
        cropped from the cache (causal attention allows it)."""
        from transformers import DynamicCache

        rows = list(range(self.rows, self.rows + len(prompts)))
        self.rows += len(prompts)
        for row, seed in zip(rows, row_seeds or []):
            if self.settings.do_sample:
                self.generators[row] = torch.Generator(device=self.device).manual_seed(int(seed))
        for row in rows:
            self.tokens[row], self.finished[row] = [], False
        distinct: dict[tuple[int, ...], int] = {}
        row_slot = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        ids, mask = left_pad([list(p) for p in distinct], self.pad_id, self.device)
        prefill_ids, prefill_mask = ids, mask
        if prompt_embeddings:
            column = torch.ones(len(distinct), 1, dtype=mask.dtype, device=self.device)
            prefill_ids = torch.cat([ids, column * self.emb_id], dim=1)
            prefill_mask = torch.cat([mask, column], dim=1)
        out = self.body(input_ids=prefill_ids, attention_mask=prefill_mask, position_ids=position_ids(prefill_mask),
                        past_key_values=DynamicCache(config=self.lm.config), use_cache=True)
        cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        if prompt_embeddings:
            cache.crop(-1)
            plain = F.normalize(hidden.float(), dim=-1)
            for row, slot in zip(rows, row_slot):
                self.plain[row] = plain[slot]
            hidden = out.last_hidden_state[:, -2]
        first = self._merge(cache, mask, hidden)
        members: list[list[int]] = [[] for _ in distinct]
        for row, slot in zip(rows, row_slot):
            members[slot].append(row)
        for slot, group in enumerate(members):
            self.slots.add(first + slot, group, SAMPLE, 0, self.pad_id)
        return rows

    def _merge(self, cache, mask: torch.Tensor, hidden: torch.Tensor) -> int:
        """Append a prefilled cache's rows to the running one (both left-padded to one width); returns the first
        new cache row. A cache with no live slot is replaced."""
        if not self.live:
            self.cache, self.mask, self.hidden, self.slots = cache, mask, hidden, _Slots.empty()
            return 0
        width = max(self.mask.shape[1], mask.shape[1])
        kinds = {type(layer) for layer in (*self.cache.layers, *cache.layers)}
        if kinds != {DynamicLayer}:  # checked before any change: a refused merge leaves the running decode whole
            raise NotImplementedError(f"rows cannot join a running cache of {sorted(k.__name__ for k in kinds)}")
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys, old.values = (torch.cat([_left_pad_seq(a, width), _left_pad_seq(b, width)], dim=0)
                                    for a, b in ((old.keys, new.keys), (old.values, new.values)))
        first = self.mask.shape[0]
        self.mask = torch.cat([_left_pad_seq(self.mask, width), _left_pad_seq(mask, width)], dim=0)
        self.hidden = torch.cat([self.hidden, hidden], dim=0)
        return first

    def advance(self) -> bool:
        """Choose every sampling slot's next token and lay out the next step's slots; ``False`` when every slot
        is done."""
        current = self.slots
        chosen = _choose(self.hidden, current.members, current.phase, self.head, self.suppress, self.settings,
                         self.generators)
        nxt = _Slots.empty()
        for slot, (rows, state, count) in enumerate(zip(current.members, current.phase, current.count)):
            source = current.source[slot]
            if state == DEAD:
                nxt.add(source, rows, DEAD, count, self.pad_id)
            elif state == EMB:  # the input was <emb>: its state is the embedding of every row of the slot
                for row in rows:
                    self.embeddings[row] = self.hidden[source].float()
                self.done += rows
                nxt.add(source, rows, DEAD, count, self.pad_id)
            elif state == CLOSE:
                nxt.add(source, rows, EMB, count, self.emb_id if self.emb_id is not None else self.pad_id)
            elif state == CUT:  # at the length limit: eos, then <emb>
                nxt.add(source, rows, CLOSE, count, self.eos_ids[0])
            else:
                self._sampled(source, rows, count, chosen, nxt)
        self.slots = nxt
        return self.live

    def _sampled(self, source: int, rows: list[int], count: int, chosen: dict[int, int], nxt: _Slots) -> None:
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
                if not embedding:
                    self.done += group
                nxt.add(source, group, CLOSE if embedding else DEAD, count, self.eos_ids[0])
                continue
            for row in group:
                self.tokens[row].append(token)
            full = count + 1 >= self.settings.max_new_tokens
            if full and not embedding:
                self.done += group
                nxt.add(source, group, DEAD, count + 1, self.pad_id)
            else:
                nxt.add(source, group, CUT if full else SAMPLE, count + 1, token)

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

    def take(self, row: int) -> tuple[list[int], bool, torch.Tensor | None, torch.Tensor | None]:
        """A finished row's (tokens, ended with eos, normalised embedding, prompt embedding), forgotten here."""
        embedding = self.embeddings.pop(row, None)
        self.generators.pop(row, None)
        return (self.tokens.pop(row), self.finished.pop(row),
                F.normalize(embedding, dim=-1) if embedding is not None else None, self.plain.pop(row, None))

    def result(self) -> Decoded:
        rows = range(self.rows)
        embeddings = (F.normalize(torch.stack([self.embeddings[r] for r in rows]), dim=-1)
                      if self.emb_id is not None else None)
        plain = torch.stack([self.plain[r] for r in rows]) if self.plain else None
        return Decoded([self.tokens[r] for r in rows], [self.finished[r] for r in rows], self.generated, embeddings,
                       self.steps, plain)


def _left_pad_seq(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` (a mask ``(rows, seq)`` or keys / values ``(rows, heads, seq, dim)``) padded on the left of its
    sequence dimension to ``width`` (zeros: masked out)."""
    dim = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class DecodeStream:
    """Decoding that takes new prompts between steps (continuous batching, for a server): rows join at a step
    boundary (their prefill merged into the running KV cache) and leave as they end, so a prompt that arrives
    during a long batch starts at the next step instead of after the batch. A row's tokens and embedding are
    those :func:`decode` gives it (its own generator, masked padding)."""

    def __init__(self, lm, *, settings: GenerationSettings, pad_id: int, eos_ids: list[int],
                 suppress_ids: Sequence[int] = (), emb_id: int | None = None):
        if not eos_ids:
            raise ValueError("decoding needs an eos token")
        self._state = _Decoding(lm, settings=settings, pad_id=pad_id, eos_ids=list(eos_ids),
                                suppress_ids=suppress_ids, emb_id=emb_id)

    @property
    def busy(self) -> bool:
        """Rows are still decoding."""
        return self._state.live

    @torch.no_grad()
    def add(self, prompts: list[list[int]], row_seeds: list[int] | None = None,
            prompt_embeddings: bool = False) -> list[int]:
        """Start ``prompts`` (checked as :func:`decode` checks them); returns their row ids."""
        _check(prompts, row_seeds, self._state.settings, prompt_embeddings, self._state.emb_id)
        return self._state.add(prompts, row_seeds, prompt_embeddings) if prompts else []

    @torch.no_grad()
    def step(self) -> list[int]:
        """One decoding step; returns the rows that ended (read them with :meth:`take`)."""
        state = self._state
        if state.advance():
            state.compact()
            state.feed()
        done, state.done = state.done, []
        return done

    @property
    def generated_tokens(self) -> int:
        return self._state.generated

    def take(self, row: int) -> tuple[list[int], bool, torch.Tensor | None, torch.Tensor | None]:
        """An ended row's ``(tokens, ended with eos, embedding, prompt embedding)``."""
        return self._state.take(row)


def _check(prompts: list[list[int]], row_seeds: list[int] | None, settings: GenerationSettings,
           prompt_embeddings: bool, emb_id: int | None) -> None:
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if settings.do_sample and (row_seeds is None or len(row_seeds) != len(prompts)):
        raise ValueError(f"sampling needs one seed per row: {0 if row_seeds is None else len(row_seeds)} seeds for "
                         f"{len(prompts)} prompts")
    if prompt_embeddings and emb_id is None:
        raise ValueError("prompt_embeddings needs emb_id")


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
    if not eos_ids:
        raise ValueError("decoding needs an eos token")
    _check(prompts, row_seeds, settings, prompt_embeddings, emb_id)
    state = _Decoding(lm, settings=settings, pad_id=pad_id, eos_ids=list(eos_ids), suppress_ids=suppress_ids,
                      emb_id=emb_id)
    state.add(prompts, row_seeds, prompt_embeddings)
    while state.advance():
        state.compact()
        state.feed()
    return state.result()
