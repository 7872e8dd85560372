"""Settings of ``o1-embedder mine``, ``synth`` and ``vote``: one dataclass each, the source of their options.

Every field is one command-line option (:mod:`o1_embedder.options`), checked when the settings are made, so a
bad value fails before any model loads or any file is written. ``synth`` also takes every
:class:`~o1_embedder.generation.settings.GenerationSettings` field (with synthesis' defaults: 256 new tokens,
temperature 0.7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from o1_embedder.options import check_paths
from o1_embedder.synthesis.vote import DEFAULT_COMMITTEE

__all__ = ["MineSettings", "SourceSettings", "SynthSettings", "VoteSettings"]

BACKENDS = ("transformers", "openai", "vllm")


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


def _at_least(settings: Any, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class SourceSettings:
    """Where records come from and where they go (the options every synthesis command shares)."""

    source: str = _opt(None, "records (JSON lines with query, pos[, neg, query_id]) or a BEIR folder ('cranfield' "
                             "names the shipped copy)", positional=True)
    output: str = _opt(None, "output JSON lines file", short="-o", required=True)
    split: str | None = _opt(None, "BEIR qrels split (default: train when present, else test)")
    min_grade: int = _opt(1, "BEIR: lowest relevance grade counted as positive")
    max_queries: int | None = _opt(None, "BEIR: sample this many judged queries")
    max_docs: int | None = _opt(None, "BEIR: keep the judged documents plus a sample up to this many")
    overwrite: bool = _opt(False, "replace an existing output file (synth, vote: start it over instead of resuming)")

    def __post_init__(self) -> None:
        check_paths(self, "source", "output")
        _at_least(self, 1, "max_queries", "max_docs")
        _at_least(self, 0, "min_grade")


@dataclass(frozen=True)
class MineSettings(SourceSettings):
    """``o1-embedder mine``: hard negatives (Sentence-Transformers' ``mine_hard_negatives``) for records."""

    seed: int = _opt(0, "BEIR subset sampling seed")
    model: str = _opt("all-MiniLM-L6-v2", "Sentence-Transformers model that mines (installs offline)")
    num_negatives: int = _opt(15, "negatives per record")
    range_min: int = _opt(0, "skip this many top-ranked candidates")
    range_max: int | None = _opt(None, "consider candidates up to this rank")
    relative_margin: float = _opt(0.05, "drop candidates scoring above (1 - margin) x the weakest positive's score")
    no_margin: bool = _opt(False, "no margin: the top non-positive candidates")
    sampling: str = _opt("top", "which candidates become negatives", choices=("top", "random"))
    corpus: str | None = _opt(None, "more candidate passages: a BEIR folder or corpus.jsonl")
    batch_size: int = _opt(64, "encoding batch size")
    replace: bool = _opt(False, "mine again for records that already have negatives")

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, 1, "num_negatives", "range_max", "batch_size")
        _at_least(self, 0, "range_min")
        margin = self.relative_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise ValueError(f"relative_margin must be in [0, 1), got {margin!r}")


@dataclass(frozen=True)
class SynthSettings(SourceSettings):
    """``o1-embedder synth``: N candidate thoughts per record (resumable JSON lines)."""

    subset_seed: int = _opt(0, "BEIR subset sampling seed")
    backend: str = _opt("transformers", "where the thoughts are written", choices=BACKENDS, group="generator")
    model: str | None = _opt(None, "transformers/vllm: causal LM folder or hub id (default: the embedded "
                                   "SmolLM2-135M-Instruct); openai: served model (default: the server's first)",
                             group="generator")
    num_candidates: int = _opt(3, "candidate thoughts per record", short="-n", group="generator")
    batch_size: int = _opt(8, "transformers: rows generated together", group="generator")
    device: str | None = _opt(None, "transformers: torch device (default cpu)", group="generator")
    dtype: str | None = _opt(None, "transformers/vllm: e.g. bfloat16", group="generator")
    no_chat_template: bool = _opt(False, "send the plain-text prompt instead of chat", group="generator")
    base_url: str | None = _opt(None, "e.g. http://127.0.0.1:8000/v1 (vllm serve, SGLang, llama.cpp server)",
                                group="OpenAI-compatible server")
    api_key: str | None = _opt(None, "default: $OPENAI_API_KEY", group="OpenAI-compatible server")
    endpoint: str = _opt("chat", "chat (the server applies the chat template) or completion (plain prompt)",
                         choices=("chat", "completion"), group="OpenAI-compatible server")
    concurrency: int = _opt(16, "requests in flight", group="OpenAI-compatible server")
    timeout: float = _opt(120.0, "seconds per HTTP request", group="OpenAI-compatible server")
    max_retries: int = _opt(5, "retries per HTTP request (exponential backoff)", group="OpenAI-compatible server")
    instruction: str | None = _opt(None, "the instruction (default: think about a plausible response ...)",
                                   group="prompt")
    instruction_file: str | None = _opt(None, "read the instruction from a file", group="prompt")
    query_template: str = _opt("Query: {query}", "how the query is shown", group="prompt")
    few_shot: int = _opt(2, "examples per prompt (query -> relevant passage)", group="prompt")
    examples: str | None = _opt(None, "JSON lines of {query, passage} to draw examples from (default: the first 64 "
                                      "records)", group="prompt")
    max_example_chars: int = _opt(600, "characters of an example passage", group="prompt")
    no_system_role: bool = _opt(False, "put the instruction in the first user turn", group="prompt")
    max_attempts: int = _opt(3, "rounds per record before it is reported failed", group="run")
    min_candidates: int | None = _opt(None, "accept a record with at least this many candidates after the last "
                                            "round (default: all N)", group="run")
    chunk_size: int | None = _opt(None, "records handed to the backend together (default: 4 x concurrency or "
                                        "batch size)", group="run")
    limit: int | None = _opt(None, "only the first N records", group="run")

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, 1, "num_candidates", "batch_size", "concurrency", "max_attempts", "min_candidates",
                  "chunk_size", "limit")
        _at_least(self, 0, "few_shot", "max_example_chars", "max_retries")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) \
                or not math.isfinite(self.timeout) or self.timeout <= 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {self.timeout!r}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")

    @property
    def records_per_chunk(self) -> int:
        return self.chunk_size or 4 * (self.concurrency if self.backend == "openai" else self.batch_size)


@dataclass(frozen=True)
class VoteSettings:
    """``o1-embedder vote``: a committee of retrievers picks each record's thought."""

    source: str = _opt(None, "records with neg and candidates (the output of 'synth' on mined records)",
                       positional=True)
    output: str = _opt(None, "training file (JSON lines, resumable)", short="-o", required=True)
    committee: list[str] = _opt(list(DEFAULT_COMMITTEE), "'bm25' and/or Sentence-Transformers models", nargs="+")
    method: str = _opt("hard", "hard: majority of first choices; soft: mean rank-based quality",
                       choices=("hard", "soft"))
    batch_size: int = _opt(32, "encoding batch size of dense members")
    chunk_size: int = _opt(128, "records scored together")
    overwrite: bool = _opt(False, "start the output over instead of resuming")

    def __post_init__(self) -> None:
        check_paths(self, "source", "output")
        if not self.committee:
            raise ValueError("committee needs at least one member ('bm25' or a Sentence-Transformers model)")
        _at_least(self, 1, "batch_size", "chunk_size")
