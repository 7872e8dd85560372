"""Pseudo-queries from documents, for training without a single real query.

Three sources, each giving a ``(query, positive)`` pair from one document:

* **sentence** (inverse cloze, Lee et al. 2019): one sentence cut out of the document is the query; the
  document without it is the positive, so the pair cannot be matched by copying words;
* **title**: the document's title is the query, its text without the title the positive;
* **question** (InPars / Promptagator): an LLM writes a search question the document answers; the question
  is kept only when the source document ranks in the teacher committee's top ``k`` for it over the whole
  corpus (round-trip filtering), and the positive is the whole document.

The functions here are pure (text in, text out); the ``adapt`` pipeline stage runs them over a corpus.
"""

from __future__ import annotations

import random
import re

__all__ = ["KINDS", "QUESTION_INSTRUCTION", "clean_question", "inverse_cloze", "is_repetitive", "question_prompt",
           "sentences", "title_query"]

KINDS = ("question", "title", "sentence")

QUESTION_INSTRUCTION = ("Write a question that a reader could ask a search engine to find this passage. "
                        "Answer with the question only, ending with a question mark.")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
#: a sentence starts with a capital, a digit, a quote or a parenthesis (fewer false splits after "e.g.")
_CASED_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str, *, cased: bool = False) -> list[str]:
    """The sentences of ``text``: split after ``.``, ``!`` or ``?`` followed by space (``cased``: and by a capital,
    digit, quote or parenthesis, for cased text), whitespace collapsed."""
    pattern = _CASED_SENTENCE_END if cased else _SENTENCE_END
    return [s for s in (" ".join(part.split()) for part in pattern.split(text.strip())) if s]


def inverse_cloze(text: str, rng: random.Random, *, min_words: int = 6, max_words: int = 40, cased: bool = False,
                  within_words: int | None = None) -> tuple[str, str] | None:
    """``(sentence, text without it)`` for a sentence other than the first of a document with 3+ sentences
    and ``min_words``-``max_words`` words, or ``None`` when there is none. ``within_words``: only a sentence that
    ends within the document's first so many words (the part a model truncated to that length still reads)."""
    parts = sentences(text, cased=cased)
    ends = [sum(len(p.split()) for p in parts[:k + 1]) for k in range(len(parts))]
    choices = [i for i in range(1, len(parts)) if min_words <= len(parts[i].split()) <= max_words
               and (within_words is None or ends[i] <= within_words)]
    if len(parts) < 3 or not choices:
        return None
    i = rng.choice(choices)
    return parts[i], " ".join(parts[:i] + parts[i + 1:])


def title_query(title: str, text: str, *, min_words: int = 2) -> tuple[str, str] | None:
    """``(title, text)`` when the title has ``min_words`` words or more and is not the text's own opening."""
    title = " ".join(title.split())
    if len(title.split()) < min_words or not text.strip() or " ".join(text.split()).lower().startswith(title.lower()):
        return None
    return title, text


def question_prompt(text: str, max_words: int = 120) -> str:
    """The user turn asking for a question about the first ``max_words`` words of a document (passage first,
    instruction last: on 48 Cranfield documents SmolLM2-135M-Instruct then writes questions, 36 of them ending
    with "?", where the instruction first gave 46 statements opening "The passage is ...")."""
    return f"Passage: {' '.join(text.split()[:max_words])}\n\n{QUESTION_INSTRUCTION}"


def clean_question(text: str, max_words: int = 40) -> str:
    """The first line of a generated question, without labels or quotes; ``""`` when it is not a usable query:
    fewer than 3 words, more than ``max_words``, a repetition loop (:func:`is_repetitive`) or a question with no
    word of content ("What is the passage about?", "What is the answer to this question?")."""
    line = next((part.strip() for part in text.strip().splitlines() if part.strip()), "")
    line = re.sub(r"^(question|query|search question)\s*\d*\s*:\s*", "", line, flags=re.IGNORECASE)
    line = line.strip().strip("\"'*` ").strip()
    words = line.split()
    if not 3 <= len(words) <= max_words or is_repetitive(line) or not _content_words(line):
        return ""
    return line


#: words that ask about the prompt itself, not about what the passage says
_NO_CONTENT = frozenset("a about an answer article does for in is it meaning of passage paragraph purpose question "
                        "text that the this to what what's which".split())


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[\w']+", text.lower()) if w not in _NO_CONTENT]


def is_repetitive(text: str, n: int = 3, min_distinct: float = 0.8) -> bool:
    """Whether ``text`` repeats itself: a word ``n``-gram occurs twice and fewer than ``min_distinct`` of its
    ``n``-grams are distinct ("What is the accuracy of the accuracy of the accuracy of ...", the loops a small
    greedy writer falls into; "What is X, and what is Y?" repeats one trigram of ten and passes)."""
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return bool(grams) and len(set(grams)) < min_distinct * len(grams)
