"""Which path a text takes: the query path (format, thinking) or the document path.

Prompt names and prefixes route (:func:`prompt_route`); Sentence-Transformers' training collator without a
``router_mapping`` is stopped before it trains queries as documents (:func:`check_collator_routing`).
"""

from __future__ import annotations

import sys
import types

__all__ = ["DOCUMENT_NAMES", "QUERY_NAMES", "QUERY_PROMPT", "check_collator_routing", "prompt_route"]

#: the model's ``prompts["query"]``: it routes ``encode(..., prompt_name="query")`` to the query path (it is a
#: marker, never text the model sees)
QUERY_PROMPT = "o1-embedder:query "
#: prompt names (``encode(prompt_name=...)``) and prompt prefixes (``encode(prompt="query: ")``, the E5 habit) that
#: frameworks and other models use for queries and for documents; each routes to that path, none is text the model sees
QUERY_NAMES = ("query", "queries", "search_query", "question", "retrieval.query", "s2p_query")
DOCUMENT_NAMES = ("document", "documents", "passage", "passages", "text", "corpus", "search_document", "doc",
                  "retrieval.passage")


def prompt_route(prompt: str | None) -> str | None:
    """``"query"`` / ``"document"`` for a prompt that names a side (``"query: "``, ``"passage: "``,
    ``"search_query: "`` ...), else ``None`` (no prompt, or free text to prepend)."""
    if not prompt:
        return None
    if prompt == QUERY_PROMPT:
        return "query"
    name = prompt.strip().rstrip(":").strip().lower()
    return "query" if name in QUERY_NAMES else "document" if name in DOCUMENT_NAMES else None


def check_collator_routing() -> None:
    """Sentence-Transformers' data collator gives a column a task only when ``router_mapping`` names it; with
    no mapping at all every column, the anchor included, would be trained as a document while inference
    embeds queries as queries. Called for an untasked batch: stop before the first step and name the fix."""
    from sentence_transformers.base.data_collator import BaseDataCollator

    frame: types.FrameType | None = sys._getframe(2)
    for _ in range(4):  # collator.__call__ -> SentenceTransformer.preprocess -> O1Embedder.preprocess
        if frame is None:
            return
        caller = frame.f_locals.get("self")
        if isinstance(caller, BaseDataCollator):
            if not caller.router_mapping:
                raise ValueError(
                    "o1-embedder: Sentence-Transformers' data collator has no router_mapping, so the query "
                    "column would be trained as documents (inference embeds queries as queries). Use "
                    "o1_embedder.training.JointTrainer (its first column is the query), or pass "
                    "SentenceTransformerTrainingArguments(router_mapping={'anchor': 'query'}) with your query "
                    "column's name (router_mapping={'anchor': 'document'} trains it as a document on purpose)")
            return
        frame = frame.f_back
