"""Candidate thoughts written by an o1-embedder model through its own thinking path.

Domain adaptation trains a model toward the thoughts it would write itself, filtered by the committee
(:func:`~o1_embedder.synthesis.vote.vote`): the candidates must come from the query prompt the model
sees at inference (its prompt format, its special tokens suppressed), not from an instruction prompt.
:class:`ThinkingBackend` is a :class:`~o1_embedder.generation.backends.GenerationBackend` over the model's
own decoding loop, so :func:`~o1_embedder.synthesis.explore.synthesize` drives it (resume, alignment,
retries) as it drives any backend. A request's query is the content of its last user turn; use it with
:data:`QUERY_ONLY_PROMPT`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from o1_embedder.generation.backends import Generation, GenerationBackend, GenerationRequest
from o1_embedder.generation.settings import GenerationSettings, row_seed
from o1_embedder.synthesis.explore import ExplorationPrompt

__all__ = ["QUERY_ONLY_PROMPT", "ThinkingBackend"]

#: the exploration prompt that hands the bare query to a :class:`ThinkingBackend`
QUERY_ONLY_PROMPT = ExplorationPrompt(instruction="", query_template="{query}", answer_prefix="", num_examples=0)


class ThinkingBackend(GenerationBackend):
    """Samples thoughts with ``model``'s own query format and decoding loop (``model``: an o1-embedder
    ``SentenceTransformer`` or its ``O1Embedder`` module); ``batch_size`` rows are decoded together."""

    name = "thinking"

    def __init__(self, model: Any, *, settings: GenerationSettings | None = None, batch_size: int = 32):
        super().__init__(settings)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.module = model[0] if hasattr(model, "__getitem__") and not hasattr(model, "builder") else model
        self.batch_size = batch_size

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.module.fingerprint()}

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        from o1_embedder.generation.decoding import decode

        module = self.module
        queries = [request.messages[-1]["content"] for request in requests]
        prompts = module.builder.query_prompts(queries) if queries else []
        rows = [(position, k) for position, request in enumerate(requests) for k in range(request.n)]
        texts: dict[int, list[str]] = {position: [] for position in range(len(requests))}
        tokens = {position: 0 for position in range(len(requests))}
        remaining = {position: request.n for position, request in enumerate(requests)}
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            with torch.no_grad():
                result = decode(
                    module.model, [prompts[p] for p, _ in chunk], settings=self.settings,
                    pad_id=module.tokenizer.pad_token_id, eos_ids=[module.builder.eos_id],
                    suppress_ids=module.special_token_ids,
                    row_seeds=[row_seed(requests[p].seed, str(k)) for p, k in chunk])
            decoded = module.tokenizer.batch_decode(result.token_ids, skip_special_tokens=True)
            for (position, _), ids, text in zip(chunk, result.token_ids, decoded):
                texts[position].append(text.strip())
                tokens[position] += len(ids) + 1
                remaining[position] -= 1
                if remaining[position] == 0:
                    yield position, Generation(texts=texts[position], tokens=tokens[position])
