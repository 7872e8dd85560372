"""The model side of the server: turn texts into token ids, find answers in the thought cache, run batches.

Two threads use a :class:`ModelRunner`, each with its own half:

* the *preparation* thread (:meth:`prepare`): tokenises with a private copy of the tokenizer (fast tokenizers
  must not be used from two threads at once) and looks thoughts up in the module's thought cache;
* the *model* thread (:meth:`think`, :meth:`embed`): the only thread that runs the model, since torch is not
  re-entrant across threads for one model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from o1_embedder.model.encoding import embed_sequences
from o1_embedder.model.formats import PromptFormat, SequenceBuilder
from o1_embedder.model.module import O1Embedder
from o1_embedder.model.thinking import ThinkingStream

__all__ = ["EMBED", "THINK", "ModelRunner", "Prepared"]

#: Kinds of work. THINK: queries that generate thoughts; EMBED: documents and queries without a thought, both one
#: forward pass over complete sequences, so they share batches.
THINK = "think"
EMBED = "embed"


@dataclass
class Prepared:
    """A request's texts ready for the model.

    ``payloads`` are prompt ids (THINK: generation continues from them) or complete sequences (EMBED).
    ``vectors[i]`` is already known (from the thought cache) or ``None`` (the model must run).
    ``tokens`` counts the token ids the model reads for the request (format tokens included), for ``usage``.
    """

    kind: str
    texts: list[str]
    payloads: list[list[int]]
    vectors: list[np.ndarray | None]
    tokens: int

    @property
    def missing(self) -> list[int]:
        return [i for i, v in enumerate(self.vectors) if v is None]


class ModelRunner:
    """Preparation and model calls for one :class:`O1Embedder`."""

    def __init__(self, module: O1Embedder):
        self.module = module
        self.builder = SequenceBuilder(copy.deepcopy(module.tokenizer), PromptFormat.from_dict(module.prompt_format),
                                       module.max_query_tokens, module.max_document_tokens)

    @property
    def dimension(self) -> int:
        return self.module.get_embedding_dimension()

    @property
    def default_think(self) -> bool:
        return self.module.think

    def warm_up(self) -> None:
        """Compute the backbone fingerprint once (it hashes every weight), so cache lookups stay cheap."""
        if self.module.thought_cache is not None:
            self.module.fingerprint()

    # ------------------------------------------------------------------------- preparation thread
    def prepare(self, texts: list[str], input_type: str, think: bool) -> Prepared:
        """Token ids for ``texts``; for thinking queries, the embeddings the thought cache already holds."""
        if input_type == "query" and think:
            prompts = self.builder.query_prompts(texts)
            return Prepared(THINK, texts, prompts, self.cached_vectors(texts), sum(map(len, prompts)))
        sequences = self.builder.query_without_thought(texts) if input_type == "query" else \
            self.builder.documents(texts)
        return Prepared(EMBED, texts, sequences, [None] * len(texts), sum(map(len, sequences)))

    def cached_vectors(self, queries: list[str]) -> list[np.ndarray | None]:
        """Per query, its embedding when every thought it needs is cached with its embedding, else ``None``.

        Combined as the module combines them (mean of the K thought embeddings, L2-normalised), so a hit answers
        exactly what ``think_and_embed`` would, without waiting for the model thread.
        """
        return self.module.cached_query_embeddings(queries)

    # ------------------------------------------------------------------------------- model thread
    def stream(self) -> ThinkingStream | None:
        """Thinking queries that join a running decode, or ``None`` where thoughts come a batch at a time (from a
        generation server)."""
        return None if self.module.thought_writer is not None else self.module.thinking_stream()

    @torch.no_grad()
    def think(self, texts: list[str], prompts: list[list[int]]) -> np.ndarray:
        """Think-then-embed a batch of queries in one module call; repeated texts are computed once."""
        first: dict[str, int] = {}
        for i, text in enumerate(texts):
            first.setdefault(text, i)
        unique = list(first)
        embeddings, _ = self.module.think_and_embed(unique, [prompts[first[t]] for t in unique])
        vectors = embeddings.float().cpu().numpy()
        row = {text: i for i, text in enumerate(unique)}
        return vectors[[row[t] for t in texts]]

    @torch.no_grad()
    def embed(self, sequences: list[list[int]]) -> np.ndarray:
        """Embed complete sequences (documents and queries without a thought) in one forward pass."""
        module = self.module
        return embed_sequences(module.model, sequences, module.tokenizer.pad_token_id).float().cpu().numpy()
