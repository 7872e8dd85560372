"""The thinking path of :class:`~o1_embedder.model.module.O1Embedder`: thought cache, generation, blending.

A call to :func:`think_and_embed` works on one :class:`ThinkingBatch`, the state of the call:

* **cached**: each (query, sample) whose thought the cache holds fills its slot without a model call (a thought
  known without its embedding is embedded with one forward pass over ``prompt + thought + eos + <emb>``);
* **generated**: the other slots are decoded in chunks of at most ``decode_rows`` rows (a query's K samples
  together, sharing one prefill), their ``<emb>`` state read from generation's KV cache, each chunk stored in
  the cache as soon as it is done;
* **blended**: the K thought vectors are averaged and re-normalised, then mixed with the query's own embedding
  (``prompt + <emb>``, read in generation's prefill or from the cache) by ``query_weight``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from o1_embedder.generation.cache import CachedThought, ThoughtCache, thought_key
from o1_embedder.generation.decoding import DecodeStream
from o1_embedder.generation.settings import row_seed
from o1_embedder.model.encoding import embed_sequences
from o1_embedder.model.encoding import think_and_embed as decode_and_embed
from o1_embedder.model.formats import validate_texts

if TYPE_CHECKING:
    from o1_embedder.model.module import O1Embedder

__all__ = ["ThinkingBatch", "ThinkingStream", "blend", "cache_keys", "cached_query_embeddings", "own_keys",
           "think_and_embed"]

logger = logging.getLogger(__name__)


def _cache_base(module: O1Embedder) -> tuple[str, str, str]:
    described = {"format": module.prompt_format, "max_query_tokens": module.max_query_tokens}
    if module.thought_writer is not None:  # thoughts of a generation server are cached apart from local ones
        described["writer"] = module.thought_writer.describe()
    settings = json.dumps(described, sort_keys=True)
    return module.fingerprint(), settings, module.generation_settings.cache_key()


def cache_keys(module: O1Embedder, queries: list[str], samples: int) -> list[list[str]]:
    """Per query, the thought cache keys of its ``samples`` thoughts."""
    base = _cache_base(module)
    return [[thought_key(*base, str(k), q) for k in range(samples)] for q in queries]


def own_keys(module: O1Embedder, queries: list[str]) -> list[str]:
    """Per query, the cache key of its own (no-thought) embedding (used when ``query_weight`` > 0)."""
    base = _cache_base(module)
    return [thought_key(*base, "query", q) for q in queries]


def blend(thoughts: torch.Tensor, plain: torch.Tensor | None, query_weight: float) -> torch.Tensor:
    """The thinking embedding: the normalised mean of the thought embeddings ``(n, K, hidden)``, mixed with the
    query's own embedding ``(n, hidden)`` by ``query_weight``."""
    embeddings = F.normalize(thoughts.mean(dim=1), dim=-1)
    if query_weight > 0 and plain is not None:
        embeddings = F.normalize((1 - query_weight) * embeddings + query_weight * plain, dim=-1)
    return embeddings


@dataclass
class ThinkingBatch:
    """The state of one :func:`think_and_embed` call (see the module docstring)."""

    queries: list[str]
    prompt_ids: list[list[int]]
    samples: int
    vectors: torch.Tensor                       # (n, K, hidden): each slot's thought embedding
    thoughts: list[list[str]]                   # [n][K]
    cache: ThoughtCache | None = None
    keys: list[list[str]] | None = None         # per query, its K cache keys (when there is a cache)
    own_keys: list[str] | None = None           # per query, the key of its own embedding (query_weight > 0)
    plain: torch.Tensor | None = None           # (n, hidden): the queries' own embeddings (query_weight > 0)
    plain_known: set[int] = field(default_factory=set)

    def slots(self) -> list[tuple[int, int]]:
        return [(i, k) for i in range(len(self.queries)) for k in range(self.samples)]

    def store(self, chunk: list[tuple[int, int]], texts: list[str], token_ids: list[list[int]],
              vectors: np.ndarray) -> None:
        if self.cache is not None and self.keys is not None:
            self.cache.put_many([(self.keys[i][k], self.queries[i], k, CachedThought(text, ids, vec))
                                 for (i, k), text, ids, vec in zip(chunk, texts, token_ids, vectors)])

    def store_plain(self, indices: list[int]) -> None:
        if self.cache is not None and self.own_keys is not None and self.plain is not None and indices:
            self.cache.put_many([(self.own_keys[i], self.queries[i], -1,
                                  CachedThought("", [], self.plain[i].cpu().numpy())) for i in indices])


def _new_batch(module: O1Embedder, queries: list[str], prompt_ids: list[list[int]] | None) -> ThinkingBatch:
    queries = validate_texts(queries, "queries")
    samples = module.num_thoughts if module.generation_settings.do_sample else 1
    hidden = module.get_embedding_dimension()
    device = module.model.device
    cache = module.thought_cache
    return ThinkingBatch(
        queries=queries, prompt_ids=prompt_ids if prompt_ids is not None else module.builder.query_prompts(queries),
        samples=samples, vectors=torch.zeros(len(queries), samples, hidden, device=device),
        thoughts=[[""] * samples for _ in queries], cache=cache,
        keys=cache_keys(module, queries, samples) if cache is not None else None,
        own_keys=own_keys(module, queries) if cache is not None and module.query_weight > 0 else None,
        plain=torch.zeros(len(queries), hidden, device=device) if module.query_weight > 0 else None)


@torch.no_grad()
def think_and_embed(module: O1Embedder, queries: list[str], prompt_ids: list[list[int]] | None = None
                    ) -> tuple[torch.Tensor, list[list[str]]]:
    """Embed queries with thinking: ``(embeddings (n, hidden), thoughts [n][K])`` (see the module docstring)."""
    batch = _new_batch(module, queries, prompt_ids)
    queries, samples = batch.queries, batch.samples
    misses = _from_cache(module, batch)
    _generate(module, batch, misses)
    if batch.plain is not None:
        _embed_plain(module, batch, [i for i in range(len(queries)) if i not in batch.plain_known])
    embeddings = blend(batch.vectors, batch.plain, module.query_weight)
    thoughts = batch.thoughts
    if samples < module.num_thoughts:  # greedy: the K thoughts are one thought repeated
        thoughts = [row * module.num_thoughts for row in thoughts]
    return embeddings, thoughts


def _from_cache(module: O1Embedder, batch: ThinkingBatch) -> list[tuple[int, int]]:
    """Fill the slots (and own embeddings) the cache holds; returns the slots still to generate."""
    if batch.cache is None or batch.keys is None:
        return batch.slots()
    keys = batch.keys
    found = batch.cache.get_many([k for row in keys for k in row] + (batch.own_keys or []))
    hidden = batch.vectors.shape[-1]
    if batch.own_keys is not None and batch.plain is not None:
        for i, key in enumerate(batch.own_keys):
            entry = found.get(key)
            if entry is not None and entry.embedding is not None and entry.embedding.shape[0] == hidden:
                batch.plain[i] = torch.from_numpy(entry.embedding)
                batch.plain_known.add(i)
    hits = [s for s in batch.slots() if keys[s[0]][s[1]] in found]
    reencode = []
    for i, k in hits:
        entry = found[keys[i][k]]
        batch.thoughts[i][k] = entry.text
        if entry.embedding is None or entry.embedding.shape[0] != hidden:
            reencode.append((i, k, entry.token_ids))
        else:
            batch.vectors[i, k] = torch.from_numpy(entry.embedding)
    if reencode:  # thought known (e.g. synthesised elsewhere) but not its embedding: one forward pass
        sequences = [module.builder.close_thought(batch.prompt_ids[i], ids) for i, _, ids in reencode]
        for (i, k, _), e in zip(reencode, embed_sequences(module.model, sequences, module.tokenizer.pad_token_id)):
            batch.vectors[i, k] = e
    module.stats["thoughts_from_cache"] += len(hits)
    return [s for s in batch.slots() if keys[s[0]][s[1]] not in found]


def _generate(module: O1Embedder, batch: ThinkingBatch, misses: list[tuple[int, int]]) -> None:
    """Decode the missing thoughts in chunks of at most ``decode_rows`` rows (a query's K samples together where
    they fit), filling the batch and storing each chunk in the cache as soon as it is done."""
    if module.thought_writer is not None and misses:
        _write_remote(module, batch, misses)
        return
    samples, limit = batch.samples, module.decode_rows
    rows = limit // samples * samples if samples <= limit else limit
    settings = module.generation_settings
    bar = _progress_bar(module, len(misses))
    try:
        for start in range(0, len(misses), rows):
            chunk = misses[start:start + rows]
            result = decode_and_embed(
                module.model, [batch.prompt_ids[i] for i, _ in chunk], settings=settings,
                pad_id=module.tokenizer.pad_token_id, eos_id=module.builder.eos_id, emb_id=module.builder.emb_id,
                suppress_ids=module.special_token_ids,
                row_seeds=[row_seed(settings.seed, batch.queries[i], str(k)) for i, k in chunk],
                prompt_embeddings=batch.plain is not None)
            texts = module.tokenizer.batch_decode(result.thought_ids, skip_special_tokens=True)
            for (i, k), e, text in zip(chunk, result.embeddings, texts):
                batch.vectors[i, k], batch.thoughts[i][k] = e, text
            if batch.plain is not None and result.prompt_embeddings is not None:
                new = {i: e for (i, _), e in zip(chunk, result.prompt_embeddings) if i not in batch.plain_known}
                for i, e in new.items():
                    batch.plain[i] = e
                batch.plain_known.update(new)
                batch.store_plain(list(new))
            module.stats["generate_calls"] += 1
            module.stats["thoughts_generated"] += len(chunk)
            module.stats["generated_tokens"] += result.generated_tokens
            if bar is not None:
                bar.update(len(chunk))
                elapsed = max(bar.format_dict.get("elapsed", 0.0), 1e-6)
                tokens = module.stats["generated_tokens"] - bar.tokens_before
                bar.set_postfix(tokens_per_s=f"{tokens / elapsed:.0f}")
            batch.store(chunk, texts, result.thought_ids, result.embeddings.cpu().numpy())
    finally:
        if bar is not None:
            bar.close()


def _write_remote(module: O1Embedder, batch: ThinkingBatch, misses: list[tuple[int, int]]) -> None:
    """The missing thoughts from ``module.thought_writer`` (a generation server), then one forward pass per chunk
    over ``prompt + thought + eos + <emb>``; the queries' own embeddings come from :func:`_embed_plain`."""
    settings = module.generation_settings
    written = module.thought_writer.write([batch.prompt_ids[i] for i, _ in misses],
                                          [row_seed(settings.seed, batch.queries[i], str(k)) for i, k in misses],
                                          settings, module.special_token_ids)
    special = {module.builder.eos_id, *module.special_token_ids}
    token_ids = [[t for t in (ids if ids is not None else module.tokenizer(text, add_special_tokens=False)["input_ids"])
                  if t not in special][:settings.max_new_tokens] for text, ids in written]
    for start in range(0, len(misses), module.decode_rows):
        chunk = misses[start:start + module.decode_rows]
        ids = token_ids[start:start + module.decode_rows]
        sequences = [module.builder.close_thought(batch.prompt_ids[i], t) for (i, _), t in zip(chunk, ids)]
        vectors = embed_sequences(module.model, sequences, module.tokenizer.pad_token_id)
        chunk_texts = module.tokenizer.batch_decode(ids, skip_special_tokens=True)
        for (i, k), e, text in zip(chunk, vectors, chunk_texts):
            batch.vectors[i, k], batch.thoughts[i][k] = e, text
        batch.store(chunk, chunk_texts, ids, vectors.cpu().numpy())
    module.stats["thoughts_generated"] += len(misses)
    module.stats["generated_tokens"] += sum(len(t) + 1 for t in token_ids)


def _embed_plain(module: O1Embedder, batch: ThinkingBatch, todo: list[int]) -> None:
    """The own embeddings of queries whose thoughts all came from the cache: one forward pass over
    ``prompt + <emb>``."""
    if not todo or batch.plain is None:
        return
    sequences = [module.builder.close_prompt(batch.prompt_ids[i]) for i in todo]
    for start in range(0, len(todo), module.decode_rows):
        part = todo[start:start + module.decode_rows]
        emb = embed_sequences(module.model, sequences[start:start + module.decode_rows], module.tokenizer.pad_token_id)
        for i, e in zip(part, emb):
            batch.plain[i] = e
    batch.store_plain(todo)


def _progress_bar(module: O1Embedder, rows: int):
    """A progress bar over the thoughts of one call (when it generates many tokens, or ``progress=True``),
    announced with the token budget when it is large on a CPU."""
    if rows == 0:
        return None
    max_new_tokens = module.generation_settings.max_new_tokens
    budget = rows * max_new_tokens
    show = module.progress if module.progress is not None else budget >= 4096
    if not show:
        return None
    if module.model.device.type == "cpu" and budget >= 16384:
        logger.warning("o1-embedder: thinking will generate up to %d tokens (%d thoughts x %d new tokens) on a "
                       "CPU; greedy K=1 with fewer new tokens is faster (configure(num_thoughts=1, "
                       "do_sample=False, max_new_tokens=32))", budget, rows, max_new_tokens)
    from tqdm.auto import tqdm

    bar = tqdm(total=rows, desc="Thinking", unit="thought", leave=False)
    bar.tokens_before = module.stats["generated_tokens"]
    return bar


def cached_query_embeddings(module: O1Embedder, queries: list[str]) -> list[np.ndarray | None]:
    """For each query, its thinking embedding when the thought cache holds all its K thoughts with their
    embeddings (combined as :func:`think_and_embed` does), else ``None``. Runs no model."""
    cache = module.thought_cache
    if cache is None or not queries:
        return [None] * len(queries)
    keys = cache_keys(module, queries, module.num_thoughts if module.generation_settings.do_sample else 1)
    if module.query_weight > 0:
        keys = [row + [own] for row, own in zip(keys, own_keys(module, queries))]
    found = cache.get_many([k for row in keys for k in row])
    dimension = module.get_embedding_dimension()
    out: list[np.ndarray | None] = []
    for row in keys:
        stored = [found[k].embedding for k in row if k in found]
        if len(stored) < len(row) or any(e is None or e.shape[0] != dimension for e in stored):
            out.append(None)
            continue
        vectors = torch.from_numpy(np.stack([e for e in stored if e is not None]).astype(np.float32))
        plain = None
        if module.query_weight > 0:
            vectors, plain = vectors[:-1], vectors[-1:]
        out.append(blend(vectors[None], plain, module.query_weight)[0].numpy())
    return out


class ThinkingStream:
    """Thinking queries that join a running decode and leave it as they finish (continuous batching, for the
    server). :meth:`add` takes queries with a label each; :meth:`step` runs one decoding step and returns the
    ``(label, embedding)`` of the queries finished since the last call. A query gets what :func:`think_and_embed`
    gives it: the same cache lookups and stores, thoughts, own embedding and blend (tested)."""

    def __init__(self, module: O1Embedder):
        if module.thought_writer is not None:
            raise ValueError("thoughts from a generation server are written a batch at a time")
        self.module = module
        self.decoding = DecodeStream(module.model, settings=module.generation_settings,
                                     pad_id=module.tokenizer.pad_token_id, eos_ids=[module.builder.eos_id],
                                     suppress_ids=module.special_token_ids, emb_id=module.builder.emb_id)
        self._rows: dict[int, tuple[ThinkingBatch, int, int]] = {}   # decode row -> (batch, query, sample)
        self._left: dict[tuple[int, int], int] = {}                  # (batch id, query) -> rows still decoding
        self._labels: dict[tuple[int, int], object] = {}
        self._ready: list[tuple[object, torch.Tensor]] = []

    @property
    def busy(self) -> bool:
        """Queries are waiting for their thoughts (or finished ones wait to be collected)."""
        return bool(self._left) or bool(self._ready)

    @property
    def in_flight(self) -> int:
        """Queries whose thoughts are still decoding."""
        return len(self._left)

    @torch.no_grad()
    def add(self, queries: list[str], prompt_ids: list[list[int]], labels: list[object]) -> None:
        """Start ``queries``; those the thought cache answers whole are ready at the next :meth:`step`."""
        module = self.module
        batch = _new_batch(module, queries, prompt_ids)
        misses = _from_cache(module, batch)
        waiting = {i for i, _ in misses}
        known = [i for i in range(len(queries)) if i not in waiting]
        if batch.plain is not None:
            _embed_plain(module, batch, [i for i in known if i not in batch.plain_known])
        for i in known:
            self._ready.append((labels[i], self._blend(batch, i)))
        if not misses:
            return
        settings = module.generation_settings
        rows = self.decoding.add([batch.prompt_ids[i] for i, _ in misses],
                                 [row_seed(settings.seed, batch.queries[i], str(k)) for i, k in misses],
                                 prompt_embeddings=batch.plain is not None)
        for row, (i, k) in zip(rows, misses):
            self._rows[row] = (batch, i, k)
            self._left[id(batch), i] = self._left.get((id(batch), i), 0) + 1
            self._labels[id(batch), i] = labels[i]
        module.stats["generate_calls"] += 1

    @torch.no_grad()
    def step(self) -> list[tuple[object, torch.Tensor]]:
        """One decoding step; the queries finished since the last call, with their embeddings."""
        ready, self._ready = self._ready, []
        if not self.decoding.busy:
            return ready
        before = self.decoding.generated_tokens
        done = self.decoding.step()
        self.module.stats["generated_tokens"] += self.decoding.generated_tokens - before
        outputs = [self.decoding.take(row) for row in done]
        texts = self.module.tokenizer.batch_decode([out[0] for out in outputs], skip_special_tokens=True)
        for row, (tokens, _, embedding, plain), text in zip(done, outputs, texts):
            batch, i, k = self._rows.pop(row)
            assert embedding is not None  # the stream always reads <emb>
            batch.vectors[i, k], batch.thoughts[i][k] = embedding, text
            if batch.plain is not None and plain is not None and i not in batch.plain_known:
                batch.plain[i] = plain
                batch.plain_known.add(i)
                batch.store_plain([i])
            batch.store([(i, k)], [text], [tokens], embedding.cpu().numpy()[None])
            self.module.stats["thoughts_generated"] += 1
            key = (id(batch), i)
            self._left[key] -= 1
            if self._left[key] == 0:
                del self._left[key]
                ready.append((self._labels.pop(key), self._blend(batch, i)))
        return ready

    def _blend(self, batch: ThinkingBatch, i: int) -> torch.Tensor:
        plain = batch.plain[i:i + 1] if batch.plain is not None else None
        return blend(batch.vectors[i:i + 1], plain, self.module.query_weight)[0]
