"""Sequence formats: how queries, thoughts and documents become token ids.

Every sequence is assembled from token-id pieces rather than from one formatted string, so that

* the user text (query or document) is tokenised in context (as part of the whole prompt string, so
  SentencePiece prefixes and merges at the template's edges are those training and the reference code
  see), truncated on its own, and the format's closing tokens (``</query>``, ``<thought>``, ``<emb>``)
  are never cut off;
* the tokenizer's BOS token appears at most once (no double BOS on Llama-style tokenizers);
* training and inference build exactly the same ids for the same text.

Layouts (``{eos}`` is the tokenizer's end-of-sequence token)::

    query, thinking  : [bos] prefix + q + suffix        -> generation continues with the thought
                       ... thought + {eos} + <emb>       -> embedding read at <emb>
    query, no thought: [bos] prefix + q + suffix + <emb>
    document         : [bos] doc_prefix + d + <emb>
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

QUERY_TOKEN = "<query>"
QUERY_END_TOKEN = "</query>"
THOUGHT_TOKEN = "<thought>"
EMB_TOKEN = "<emb>"
SPECIAL_TOKENS = [QUERY_TOKEN, QUERY_END_TOKEN, THOUGHT_TOKEN, EMB_TOKEN]


@dataclass
class PromptFormat:
    """Text pieces around the user text. ``query_template`` must contain ``{query}`` once."""

    query_template: str = QUERY_TOKEN + "{query}" + QUERY_END_TOKEN + THOUGHT_TOKEN
    document_template: str = "{document}"
    emb_token: str = EMB_TOKEN
    special_tokens: list[str] = field(default_factory=lambda: list(SPECIAL_TOKENS))

    def __post_init__(self) -> None:
        for name, placeholder in (("query_template", "{query}"), ("document_template", "{document}")):
            template = getattr(self, name)
            if not isinstance(template, str) or template.count(placeholder) != 1:
                raise ValueError(f"PromptFormat.{name} must contain {placeholder!r} exactly once, got {template!r}")
        if not isinstance(self.special_tokens, list) or not all(isinstance(t, str) and t for t in self.special_tokens):
            raise ValueError(f"PromptFormat.special_tokens must be a list of non-empty strings, "
                             f"got {self.special_tokens!r}")
        if not isinstance(self.emb_token, str) or self.emb_token not in self.special_tokens:
            raise ValueError(f"PromptFormat.emb_token {self.emb_token!r} must be one of special_tokens")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptFormat:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown PromptFormat field(s): {sorted(unknown)}")
        return cls(**data)


class SequenceBuilder:
    """Turns texts into token-id lists for one tokenizer and one :class:`PromptFormat`."""

    def __init__(self, tokenizer, prompt_format: PromptFormat, max_query_tokens: int, max_document_tokens: int):
        if max_query_tokens < 1 or max_document_tokens < 1:
            raise ValueError("max_query_tokens and max_document_tokens must be positive")
        self.tokenizer = tokenizer
        self.format = prompt_format
        self.max_query_tokens = max_query_tokens
        self.max_document_tokens = max_document_tokens
        self.emb_id = self._single_id(prompt_format.emb_token)
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("The tokenizer has no eos_token: a thought needs an end-of-sequence token")
        self.bos = self._bos_ids()
        self._q_pre, self._q_post = prompt_format.query_template.split("{query}")
        self._d_pre, self._d_post = prompt_format.document_template.split("{document}")

    def _single_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"Special token {token!r} is not in the tokenizer's vocabulary")
        return token_id

    def _bos_ids(self) -> list[int]:
        """The BOS the tokenizer would add on its own (Llama-style), once; none for tokenizers that add none."""
        bos_id = self.tokenizer.bos_token_id
        if bos_id is None:
            return []
        with_special = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return [bos_id] if with_special and with_special[0] == bos_id else []

    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _spans(self, prefix: str, suffix: str, texts: list[str], limit: int) -> list[tuple[list[int], int, int]]:
        """For each text: the ids of ``prefix + text + suffix`` tokenised as one string (the form training and
        the reference implementation see) and the ``[begin, end)`` range of the text's tokens, the text cut to
        its first ``limit`` tokens; never a format token cut.

        The text's tokens are those whose character span overlaps the text. A longer text is cut at the end of
        its ``limit``-th token and the whole string tokenised again (repeated in the rare case that the
        shorter text tokenises into more pieces). Tokenizers without offsets (slow ones) tokenise the pieces
        separately.
        """
        if limit < 1:
            raise ValueError(f"a text's token limit must be >= 1, got {limit}")
        if not texts:
            return []
        if not getattr(self.tokenizer, "is_fast", False):
            pre, post = self._encode(prefix), self._encode(suffix)
            encoded = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
            return [(pre + list(ids) + post, len(pre), len(pre) + len(ids)) for ids in encoded]
        out = []
        for text in texts:
            while True:
                enc = self.tokenizer(prefix + text + suffix, add_special_tokens=False, return_offsets_mapping=True)
                start, end = len(prefix), len(prefix) + len(text)
                offsets = enc["offset_mapping"]
                inside = [i for i, (a, b) in enumerate(offsets)
                          if (a < end and b > start) or (a == b and start <= a < end)]
                if len(inside) <= limit:
                    begin = inside[0] if inside else next((i for i, (a, _) in enumerate(offsets) if a >= end),
                                                          len(offsets))
                    out.append((list(enc["input_ids"]), begin, begin + len(inside)))
                    break
                cut = offsets[inside[limit - 1]][1] - start
                text = text[:max(cut, 1)] if cut < len(text) else text[:-1]
        return out

    def query_prompts(self, queries: list[str]) -> list[list[int]]:
        """Ids that generation continues from: ``[bos] prefix + q + suffix``, tokenised in context."""
        return [self.bos + ids for ids, _, _ in self._spans(self._q_pre, self._q_post, queries, self.max_query_tokens)]

    def thought_ids(self, thoughts: list[str], limit: int) -> list[list[int]]:
        """Token ids of thoughts as they read after the query prompt (tokenised in context), at most ``limit``."""
        return [ids[begin:end] for ids, begin, end in self._spans(self._q_post, "", thoughts, limit)]

    def query_without_thought(self, queries: list[str]) -> list[list[int]]:
        return [self.close_prompt(ids) for ids in self.query_prompts(queries)]

    def close_prompt(self, prompt_ids: list[int]) -> list[int]:
        """``prompt + <emb>``: the query's own sequence, without a thought."""
        return list(prompt_ids) + [self.emb_id]

    def close_thought(self, prompt_ids: list[int], thought_ids: list[int]) -> list[int]:
        """``prompt + thought + eos + <emb>``: the full sequence whose last state is the query embedding."""
        return list(prompt_ids) + list(thought_ids) + [self.eos_id, self.emb_id]

    def documents(self, documents: list[str]) -> list[list[int]]:
        """``[bos] doc_prefix + d + doc_suffix + <emb>``, tokenised in context."""
        return [self.bos + ids + [self.emb_id]
                for ids, _, _ in self._spans(self._d_pre, self._d_post, documents, self.max_document_tokens)]


def validate_texts(texts, what: str) -> list[str]:
    """Check user input: a list of strings. Empty strings are allowed (they embed the bare format)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(text).__name__}: {text!r:.80}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{what}[{i}] {text[:40]!r} is not valid Unicode (lone surrogate {text[err.start]!r} at "
                             f"character {err.start})") from None
    return texts
