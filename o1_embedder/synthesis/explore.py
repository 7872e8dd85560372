"""Exploration: an LLM writes N candidate thoughts per record, streamed to JSON lines, resumable.

For each record (``query_id``, ``query``, ``pos``, ``neg``) a chat conversation is built from an
instruction, a few query -> relevant passage examples and the query (:class:`ExplorationPrompt`); the
backend samples ``num_candidates`` texts. Guarantees (the reference code broke each of them):

* **alignment**: a candidate is only ever attached to the record whose request produced it (requests
  carry their position; each output line carries its ``query_id``);
* **no leaks**: a few-shot example never shows the record's own query or any of its positives (nor a
  passage containing one, or contained in one);
* **no empty thoughts**: empty texts are discarded and asked for again (``max_attempts`` rounds, each
  with a new seed); a record still short of ``min_candidates`` is reported in
  ``NAME.failures.jsonl`` with its error and never written;
* **resume**: records already in the output are skipped; a partial last line left by a killed run is
  dropped; a re-run with other generation settings is refused (use a new output or ``overwrite``);
* **reproducible**: the seed of a request is derived from (seed, query id, attempt).

Each output line is the input record plus ``candidates`` (a list of strings) and ``synthesis``
(generator description, settings and the number of attempts and generated tokens).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from o1_embedder.data.jsonl import Problems, json_lines
from o1_embedder.data.records import JsonlWriter, RecordFormatError, Stage, failures_path, with_ids
from o1_embedder.generation.backends import GenerationBackend, GenerationRequest, render_plain
from o1_embedder.generation.settings import row_seed

__all__ = [
    "DEFAULT_INSTRUCTION",
    "ExplorationPrompt",
    "FewShotExample",
    "FewShotPool",
    "SynthesisReport",
    "derive_seed",
    "synthesize",
]

logger = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = ("Given a search query, think about a plausible response to address the query: write a short "
                       "passage containing the information that a relevant document would contain.")


def derive_seed(seed: int, *parts: Any) -> int:
    """A 31-bit seed (what OpenAI-compatible servers accept) from a base seed and identifying parts (query id,
    attempt, ...): the low 31 bits of :func:`~o1_embedder.generation.settings.row_seed`."""
    return row_seed(seed, *parts) & 0x7FFFFFFF


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _shorten(text: str, limit: int) -> str:
    text = text.strip()
    if limit <= 0 or len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + " ..."


@dataclass
class FewShotExample:
    """A query and a passage relevant to it, shown to the generator as a worked example."""

    query: str
    passage: str
    query_id: str | None = None


@dataclass
class ExplorationPrompt:
    """The generator's prompt.

    Chat form: a system turn with ``instruction`` (or, with ``system_role=False``, the instruction opens
    the first user turn), then per example a user turn ``query_template`` and an assistant turn with the
    passage (cut to ``max_example_chars``), then the user turn of the query. Plain form (models without a
    chat template, completion endpoints): the same turns as text, each answer introduced by ``answer_prefix``.
    """

    instruction: str = DEFAULT_INSTRUCTION
    query_template: str = "Query: {query}"
    answer_prefix: str = "Passage: "
    num_examples: int = 2
    max_example_chars: int = 600
    system_role: bool = True

    def __post_init__(self) -> None:
        try:  # the template is filled with str.format: its only field must be {query}, once
            names = [name for _, name, _, _ in string.Formatter().parse(self.query_template) if name is not None]
        except ValueError as err:
            raise ValueError(f"query_template {self.query_template!r} is not a valid format string: {err} "
                             "(write a literal brace as {{ or }})") from None
        if names != ["query"]:
            raise ValueError(f"query_template must contain {{query}} exactly once and no other {{field}} "
                             f"(write a literal brace as {{{{ or }}}}), got {self.query_template!r}")
        if self.num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {self.num_examples}")

    def messages(self, query: str, examples: list[FewShotExample]) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for example in examples:
            turns.append({"role": "user", "content": self.query_template.format(query=example.query)})
            turns.append({"role": "assistant", "content": _shorten(example.passage, self.max_example_chars)})
        turns.append({"role": "user", "content": self.query_template.format(query=query)})
        if self.instruction.strip():
            if self.system_role:
                turns.insert(0, {"role": "system", "content": self.instruction.strip()})
            else:
                turns[0] = {"role": "user", "content": self.instruction.strip() + "\n\n" + turns[0]["content"]}
        return turns

    def request(self, query: str, examples: list[FewShotExample], n: int, seed: int) -> GenerationRequest:
        messages = self.messages(query, examples)
        return GenerationRequest(messages=messages, n=n, seed=seed,
                                 plain_prompt=render_plain(messages, self.answer_prefix))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def clean(self, text: str) -> str:
        """A generated text without surrounding space and without an echoed answer label."""
        text = (text or "").strip()
        label = self.answer_prefix.strip()
        if label and text.startswith(label):
            text = text[len(label):].strip()
        return text


class FewShotPool:
    """Examples to draw few-shot demonstrations from, never ones that would leak a record's answers.

    For a record, :meth:`choose` shuffles the pool with a seed derived from the record's id and keeps
    the first ``k`` examples that do not conflict with it: an example conflicts when it has the record's
    id or (normalised) query, or when its passage equals, contains or is contained in one of the
    record's positives. Fewer than ``k`` examples are returned when the pool has no more.
    """

    def __init__(self, examples: list[FewShotExample], seed: int = 0):
        self.examples = [e for e in examples if e.query.strip() and e.passage.strip()]
        self.seed = seed
        self._norm = [(_normalize(e.query), _normalize(e.passage)) for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def fingerprint(self) -> str:
        """Identifies the pool (its examples and seed): part of the settings a resumed run must share."""
        digest = hashlib.sha256(str(self.seed).encode())
        for e in self.examples:
            digest.update("\x1f".join((e.query_id or "", e.query, e.passage, "\x1e")).encode("utf-8"))
        return digest.hexdigest()[:12]

    @classmethod
    def from_records(cls, records: Iterable[dict], size: int = 64, seed: int = 0) -> FewShotPool:
        """The first ``size`` records' queries with their first positive."""
        examples = [FewShotExample(r["query"], r["pos"][0], r.get("query_id"))
                    for r in itertools.islice(records, size)]
        return cls(examples, seed)

    @classmethod
    def from_file(cls, path: str | Path, seed: int = 0) -> FewShotPool:
        """JSON lines with ``query`` and ``passage`` (or ``pos``, whose first item is used), optional ``query_id``."""
        path = Path(path)
        examples = []
        problems = Problems(path, RecordFormatError)
        for number, item in json_lines(path, problems):
            passage = item.get("passage") if isinstance(item, dict) else None
            if passage is None and isinstance(item, dict) and isinstance(item.get("pos"), list) and item["pos"]:
                passage = item["pos"][0]
            query = item.get("query") if isinstance(item, dict) else None
            if not isinstance(query, str) or not query.strip():
                problems.add(number, "field 'query' must be a non-empty string")
            elif not isinstance(passage, str) or not passage.strip():
                problems.add(number, "field 'passage' (or 'pos'[0]) must be a non-empty string")
            else:
                query_id = item.get("query_id")
                examples.append(FewShotExample(query, passage, query_id if isinstance(query_id, str) else None))
        problems.raise_if_any()
        if not examples:
            raise RecordFormatError(path, [f"{path}: no examples"], 1)
        return cls(examples, seed)

    def conflicts(self, index: int, record: dict) -> bool:
        example = self.examples[index]
        query_norm, passage_norm = self._norm[index]
        if example.query_id is not None and example.query_id == record.get("query_id"):
            return True
        if query_norm == _normalize(record["query"]):
            return True
        for positive in record["pos"]:
            positive_norm = _normalize(positive)
            if positive_norm and (positive_norm in passage_norm or passage_norm in positive_norm):
                return True
        return False

    def choose(self, record: dict, k: int) -> list[FewShotExample]:
        if k <= 0 or not self.examples:
            return []
        order = list(range(len(self.examples)))
        random.Random(derive_seed(self.seed, "few-shot", record["query_id"])).shuffle(order)
        chosen = []
        for index in order:
            if not self.conflicts(index, record):
                chosen.append(self.examples[index])
                if len(chosen) == k:
                    break
        return chosen


@dataclass
class SynthesisReport:
    """What a :func:`synthesize` run did."""

    output: Path
    failures_file: Path | None
    written: int = 0
    skipped: int = 0           # already in the output (resume)
    failed: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    generated_tokens: int = 0
    candidates: int = 0
    seconds: float = 0.0

    @property
    def thoughts_per_second(self) -> float:
        return self.candidates / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"wrote {self.written} records ({self.candidates} candidate thoughts) to {self.output} in "
                f"{self.seconds:.1f}s ({self.thoughts_per_second:.2f} thoughts/s); {self.skipped} already done")
        if self.failed:
            text += (f"; {len(self.failed)} failed (listed in {self.failures_file}; re-run the same command to "
                     f"retry them)")
        return text


def _with_ids(records: Iterable[dict]) -> Iterator[dict]:
    return with_ids(records, Stage.BASE)


def synthesize(records: Iterable[dict], backend: GenerationBackend, output: str | Path, *, num_candidates: int = 3,
               prompt: ExplorationPrompt | None = None, examples: FewShotPool | None = None, seed: int = 42,
               max_attempts: int = 3, min_candidates: int | None = None, chunk_size: int = 64,
               example_pool_size: int = 64, overwrite: bool = False, limit: int | None = None,
               log: Callable[[str], None] | None = None, show_progress_bar: bool = False) -> SynthesisReport:
    """Write ``num_candidates`` thoughts per record to ``output`` (JSON lines); see the module docstring.

    Args:
        records: dicts with ``query``, ``pos`` (and usually ``query_id``, ``neg``); e.g. a
            :class:`~o1_embedder.data.records.RecordFile`.
        backend: any :class:`~o1_embedder.generation.backends.GenerationBackend`.
        prompt: instruction, templates and the number of few-shot examples.
        examples: the few-shot pool; default: the first ``example_pool_size`` records.
        max_attempts: rounds per record; each round asks only for the candidates still missing.
        min_candidates: write a record with at least this many candidates after the last round
            (default ``num_candidates``: all of them).
        chunk_size: records whose requests are handed to the backend together (keep it a few times
            the backend's batch size or concurrency).
        limit: stop after this many records of the input (counting those already done).
        show_progress_bar: a progress bar over the records (records per second, time left) when their number
            is known (``len(records)``).
    """
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    min_candidates = num_candidates if min_candidates is None else min_candidates
    if not 1 <= min_candidates <= num_candidates:
        raise ValueError(f"min_candidates must be in 1..{num_candidates}, got {min_candidates}")
    if max_attempts < 1 or chunk_size < 1:
        raise ValueError("max_attempts and chunk_size must be >= 1")
    prompt = prompt or ExplorationPrompt()
    log = log or (lambda message: logger.info("%s", message))
    output = Path(output)

    stream = _with_ids(records)
    head: list[dict] = []
    if examples is None and prompt.num_examples > 0:  # drawn before ``limit``: the same pool for any limit
        head = list(itertools.islice(stream, example_pool_size))
        examples = FewShotPool.from_records(head, size=example_pool_size, seed=seed)
    stream = itertools.chain(head, stream)
    if limit is not None:
        stream = itertools.islice(stream, limit)

    generator = backend.describe()
    settings = {"generator": generator, "num_candidates": num_candidates, "seed": seed,
                "prompt": prompt.fingerprint(),
                "few_shot": examples.fingerprint() if examples is not None and prompt.num_examples else None}
    report = SynthesisReport(output=output, failures_file=failures_path(output))
    started = time.perf_counter()
    bar = None
    with JsonlWriter(output, overwrite=overwrite, inputs=[getattr(records, "path", None)]) as writer:
        _check_resume(writer, settings)
        failures = JsonlWriter(report.failures_file, overwrite=True)
        try:
            pending = _not_done(stream, writer.done, report)
            job = _Job(prompt, examples, writer, failures, report, settings, num_candidates, min_candidates,
                       max_attempts, seed)
            bar = progress_bar(records, limit, "synth", show_progress_bar)
            while True:
                chunk = list(itertools.islice(pending, chunk_size))
                if not chunk:
                    break
                _run_chunk(chunk, backend, job)
                report.seconds = time.perf_counter() - started
                if bar is not None:
                    bar.n = report.written + len(report.failed) + report.skipped
                    bar.refresh()
                log(f"synth: {report.written} written, {len(report.failed)} failed, {report.skipped} already done; "
                    f"{report.thoughts_per_second:.2f} thoughts/s")
        finally:
            if bar is not None:
                bar.close()
            failures.close()
            report.seconds = time.perf_counter() - started
    if not report.failed and report.failures_file.exists():
        report.failures_file.unlink()
    return report


def progress_bar(records: Iterable[dict], limit: int | None, desc: str, show: bool):
    """A tqdm bar over ``records`` (items per second, time left), or ``None`` when not shown or not countable."""
    if not show:
        return None
    try:
        total = len(records)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if total is not None and limit is not None:
        total = min(total, limit)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="record", dynamic_ncols=True)


def _not_done(records: Iterable[dict], done: set[str], report) -> Iterator[dict]:
    """The records whose id is not in ``done`` (counting the others in ``report.skipped``)."""
    for record in records:
        if record["query_id"] in done:
            report.skipped += 1
        else:
            yield record


def _check_resume(writer: JsonlWriter, settings: dict) -> None:
    if not writer.existing:
        return
    previous = writer.existing[0].get("synthesis")
    if not isinstance(previous, dict):
        raise ValueError(f"{writer.path} already holds records without synthesis settings; "
                         f"use a new output file or --overwrite")
    differs = [k for k in settings if previous.get(k) != settings[k]]
    if differs:
        details = "; ".join(f"{k}: {previous.get(k)!r} -> {settings[k]!r}" for k in differs)
        raise ValueError(f"{writer.path} was written with other settings ({details}); resuming would mix "
                         f"them: use a new output file or --overwrite")


@dataclass
class _Job:
    """What every chunk of one :func:`synthesize` call shares: how to ask, where to write, what to count."""

    prompt: ExplorationPrompt
    examples: FewShotPool | None
    writer: JsonlWriter
    failures: JsonlWriter
    report: SynthesisReport
    settings: dict[str, Any]
    num_candidates: int
    min_candidates: int
    max_attempts: int
    seed: int


def _run_chunk(chunk: list[dict], backend: GenerationBackend, job: _Job) -> None:
    """Ask for the candidates of ``chunk`` over up to ``max_attempts`` rounds; write each record, or its failure."""
    prompt, examples, writer, failures, report = job.prompt, job.examples, job.writer, job.failures, job.report
    settings, num_candidates, min_candidates, seed = job.settings, job.num_candidates, job.min_candidates, job.seed
    max_attempts = job.max_attempts
    got: list[list[str]] = [[] for _ in chunk]
    errors: dict[int, str] = {}
    attempts = [0] * len(chunk)
    tokens = [0] * len(chunk)
    shots = [examples.choose(r, prompt.num_examples) if examples is not None else [] for r in chunk]
    finished: set[int] = set()

    def finish(i: int) -> None:
        record = chunk[i]
        meta = {**settings, "attempts": attempts[i], "tokens": tokens[i]}
        writer.write({**record, "candidates": got[i], "synthesis": meta})
        finished.add(i)
        report.written += 1
        report.candidates += len(got[i])

    for attempt in range(max_attempts):
        todo = [i for i in range(len(chunk)) if i not in finished]
        if not todo:
            break
        requests = [prompt.request(chunk[i]["query"], shots[i], n=num_candidates - len(got[i]),
                                   seed=derive_seed(seed, chunk[i]["query_id"], attempt)) for i in todo]
        report.requests += len(requests)
        for position, generation in backend.generate_iter(requests):
            i = todo[position]
            attempts[i] += 1
            tokens[i] += generation.tokens
            report.generated_tokens += generation.tokens
            texts = [prompt.clean(t) for t in generation.texts]
            good = [t for t in texts if t]
            got[i] += good[:num_candidates - len(got[i])]
            if len(got[i]) >= num_candidates:
                errors.pop(i, None)
                finish(i)
            elif generation.error:
                errors[i] = generation.error
            else:
                errors[i] = (f"{len(texts) - len(good)} of {len(texts)} generated texts were empty"
                             if texts else "no text generated")
    for i in range(len(chunk)):
        if i in finished:
            continue
        if len(got[i]) >= min_candidates:
            finish(i)
            continue
        query_id = chunk[i]["query_id"]
        message = (f"{len(got[i])} of {num_candidates} candidates after {attempts[i]} attempts; "
                   f"last error: {errors.get(i, 'unknown')}")
        report.failed[query_id] = message
        failures.write({"query_id": query_id, "error": message, "attempts": attempts[i]})
        logger.warning("synth: %s failed: %s", query_id, message)
