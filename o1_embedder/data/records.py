"""Training records as JSON lines: validation, reading, kill-safe resumable writing.

One record per line, in the reference format the trainer reads::

    {"query_id": str, "query": str, "pos": [str, ...], "neg": [str, ...], "thought": str,
     "pos_scores": [float, ...], "neg_scores": [float, ...]}

``pos`` is required (at least one passage); ``neg``, ``thought`` and the score lists are optional.
Other fields (``candidates``, ``votes``, ``committee``, ``synthesis``, ...) are kept and ignored by the
trainer. A record without ``query_id`` (the reference code's files have none) gets a stable id made from
its content: ``"h"`` + the first 16 hex digits of SHA-256 over the query and positives.

Each pipeline stage needs more fields (:class:`Stage`): mining needs ``pos``; voting needs ``neg`` and
``candidates``; the trainer needs ``thought``. Files are validated completely before any work starts,
and every problem is reported as ``path:line: field 'x' ...`` (up to :data:`MAX_PROBLEMS`).

:class:`JsonlWriter` appends one complete line per ``write`` (a single write of the whole line, then a
flush), so a killed run leaves at most one partial *trailing* line; the next run drops it, reads the ids
already written and skips them.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..files import atomic_write, check_creatable
from .beir import BeirDataset, BeirFormatError, document_text, load_beir, resolve_beir_path, unencodable
from .jsonl import MAX_PROBLEMS, Problems, json_lines

__all__ = [
    "JsonlWriter",
    "RecordFile",
    "RecordFormatError",
    "Stage",
    "content_id",
    "dump_line",
    "check_output",
    "failures_path",
    "records_from_beir",
    "resolve_source",
    "validate_record",
    "with_ids",
    "write_records_atomic",
]

logger = logging.getLogger(__name__)


class Stage(enum.Enum):
    """What a pipeline step requires of its input records."""

    BASE = "base"              # query_id, query, pos
    MINED = "mined"            # + neg (at least one)
    CANDIDATES = "candidates"  # + neg, candidates (non-empty strings)
    TRAINING = "training"      # + thought (non-empty string)


class RecordFormatError(BeirFormatError):
    """A record file is malformed. ``problems`` holds every ``path:line: message`` found (up to the limit)."""


def content_id(query: str, positives: list[str]) -> str:
    """A stable id for a record without ``query_id``: SHA-256 over query and positives, 16 hex digits."""
    digest = hashlib.sha256("\x1f".join([query, *positives]).encode("utf-8")).hexdigest()
    return "h" + digest[:16]


def _string_list(record: dict, key: str, *, required: bool, non_empty: bool, problems: list[str]) -> None:
    if key not in record:
        if required:
            problems.append(f"missing field {key!r}")
        return
    value = record[key]
    if not isinstance(value, list):
        problems.append(f"field {key!r} must be a list of strings, got {type(value).__name__}")
        return
    if non_empty and not value:
        problems.append(f"field {key!r} is empty (needs at least one string)")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            problems.append(f"field {key!r}[{i}] must be a string, got {type(item).__name__}")
        elif not item.strip():
            problems.append(f"field {key!r}[{i}] is an empty string")
        elif reason := unencodable(item):
            problems.append(f"field {key!r}[{i}] {reason}")


def _finite(value: int | float) -> bool:
    """A number a float can hold: not NaN or infinite, and no integer too large to convert."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _float_list(record: dict, key: str, length_of: str, problems: list[str]) -> None:
    if key not in record:
        return
    value = record[key]
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        problems.append(f"field {key!r} must be a list of numbers")
    elif not all(_finite(v) for v in value):
        problems.append(f"field {key!r} holds a non-finite number (NaN, infinity, or an integer beyond a float): "
                        f"{[v if isinstance(v, float) else f'{str(v)[:12]}...' for v in value if not _finite(v)][:3]}")
    elif isinstance(record.get(length_of, []), list) and len(value) != len(record.get(length_of, [])):
        problems.append(f"field {key!r} has {len(value)} scores for {len(record.get(length_of, []))} passages "
                        f"in {length_of!r}")


def validate_record(record: Any, stage: Stage = Stage.BASE) -> list[str]:
    """Problems of one record for ``stage`` (empty list: valid). ``query_id`` may be absent (see :func:`content_id`)."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems: list[str] = []
    if "query_id" in record and (not isinstance(record["query_id"], str) or not record["query_id"].strip()):
        problems.append("field 'query_id' must be a non-empty string")
    if "query" not in record:
        problems.append("missing field 'query'")
    elif not isinstance(record["query"], str):
        problems.append(f"field 'query' must be a string, got {type(record['query']).__name__}")
    elif not record["query"].strip():
        problems.append("field 'query' is empty")
    elif reason := unencodable(record["query"]):
        problems.append(f"field 'query' {reason}")
    _string_list(record, "pos", required=True, non_empty=True, problems=problems)
    needs_neg = stage in (Stage.MINED, Stage.CANDIDATES)
    _string_list(record, "neg", required=needs_neg, non_empty=needs_neg, problems=problems)
    if needs_neg and "neg" in record and isinstance(record["neg"], list) and not record["neg"]:
        problems[-1] += " (run 'o1-embedder mine' to add hard negatives)"
    if stage is Stage.CANDIDATES:
        _string_list(record, "candidates", required=True, non_empty=True, problems=problems)
    if stage is Stage.TRAINING or "thought" in record:
        thought = record.get("thought")
        if "thought" not in record:
            problems.append("missing field 'thought'")
        elif not isinstance(thought, str):
            problems.append(f"field 'thought' must be a string, got {type(thought).__name__}")
        elif not thought.strip():
            problems.append("field 'thought' is empty")
        elif reason := unencodable(thought):
            problems.append(f"field 'thought' {reason}")
    _float_list(record, "pos_scores", "pos", problems)
    _float_list(record, "neg_scores", "neg", problems)
    if ("pos_scores" in record) != ("neg_scores" in record):
        problems.append("fields 'pos_scores'/'neg_scores': give both or neither")
    return problems


def dump_line(record: dict) -> bytes:
    """One record as a UTF-8 JSON line (non-ASCII kept, newline-terminated)."""
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


class RecordFile:
    """A validated JSON-lines record file that can be iterated any number of times (streamed, not loaded).

    Construction validates every line for ``stage`` and raises :class:`RecordFormatError` listing all
    problems with file and line; ids missing from records are assigned with :func:`content_id`, and
    duplicate ids are problems. ``len()`` is the number of records.
    """

    def __init__(self, path: str | os.PathLike, stage: Stage = Stage.BASE):
        self.path = Path(path)
        self.stage = stage
        if not self.path.is_file():
            raise FileNotFoundError(f"record file not found: {self.path}")
        self._count = self._validate()

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"RecordFile({str(self.path)!r}, stage={self.stage.value}, records={self._count})"

    def _validate(self) -> int:
        problems = Problems(self.path, RecordFormatError)
        first_line: dict[str, int] = {}
        for number, record in json_lines(self.path, problems):
            found = validate_record(record, self.stage)
            for message in found:
                problems.add(number, message)
            if found:
                continue
            record_id = _record_id(record)
            if record_id in first_line:
                problems.add(number, f"duplicate query_id {record_id!r} (first seen on line {first_line[record_id]})")
                continue
            first_line[record_id] = number
        problems.raise_if_any()
        if not first_line:
            raise RecordFormatError(self.path, [f"{self.path}: no records"], 1)
        return len(first_line)

    def __iter__(self) -> Iterator[dict]:
        for _, record in json_lines(self.path, Problems(self.path, RecordFormatError)):
            if "query_id" not in record:
                record = {"query_id": _record_id(record), **record}
            yield record


def with_ids(records: Iterable[dict], stage: Stage) -> Iterator[dict]:
    """Records validated for ``stage``, each with a ``query_id`` (assigned from content when absent);
    a duplicate id is refused. Errors name the record's position."""
    seen: set[str] = set()
    for number, record in enumerate(records, start=1):
        problems = validate_record(record, stage)
        if problems:
            raise ValueError(f"record {number}: " + "; ".join(problems))
        if "query_id" not in record:
            record = {"query_id": content_id(record["query"], record["pos"]), **record}
        if record["query_id"] in seen:
            raise ValueError(f"record {number}: duplicate query_id {record['query_id']!r}")
        seen.add(record["query_id"])
        yield record


def _record_id(record: dict) -> str:
    return record["query_id"] if "query_id" in record else content_id(record["query"], record["pos"])


def records_from_beir(dataset: BeirDataset, min_grade: int = 1) -> list[dict]:
    """One record per query with at least one document of grade >= ``min_grade``: ``query_id, query, pos``.

    Positives are ordered by grade (highest first), then corpus order; their text is ``title text``.
    """
    order = {doc_id: i for i, doc_id in enumerate(dataset.corpus)}
    records = []
    for query_id, query in dataset.queries.items():
        judged = [(doc_id, grade) for doc_id, grade in dataset.qrels.get(query_id, {}).items() if grade >= min_grade]
        if not judged or not query.strip():
            continue
        judged.sort(key=lambda item: (-item[1], order[item[0]]))
        positives = [document_text(dataset.corpus[doc_id]) for doc_id, _ in judged]
        positives = [p for p in dict.fromkeys(positives) if p.strip()]
        if positives:
            records.append({"query_id": query_id, "query": query, "pos": positives})
    return records


def default_split(path: Path) -> str:
    """``train`` when the BEIR folder has ``qrels/train.tsv``, else ``test``."""
    return "train" if (path / "qrels" / "train.tsv").is_file() else "test"


def resolve_source(source: str | os.PathLike, stage: Stage = Stage.BASE, *, split: str | None = None,
                   min_grade: int = 1, max_queries: int | None = None, max_docs: int | None = None,
                   seed: int = 0, log=None) -> tuple[Iterable[dict], BeirDataset | None]:
    """Records from a JSON-lines file, a BEIR folder, or ``cranfield`` (the shipped copy).

    Returns ``(records, dataset)``; ``dataset`` is the (possibly subset) BEIR collection when the source
    is a folder, else ``None``. ``max_queries`` / ``max_docs`` subset a BEIR folder
    (:meth:`BeirDataset.subset`, seeded); ``split`` defaults to ``train`` when present, else ``test``.
    """
    path = resolve_beir_path(source)
    if path.is_dir():
        split = split or default_split(path)
        dataset = load_beir(path, split=split)
        if max_queries is not None or max_docs is not None:
            dataset, description = dataset.subset(max_queries, max_docs, seed=seed)
            if log:
                log(f"subset: {description}")
        records = records_from_beir(dataset, min_grade=min_grade)
        if not records:
            raise ValueError(f"{path}: no query has a document of grade >= {min_grade} in split {split!r}")
        if log:
            log(f"{path} (split {split}): {len(records)} queries with relevant documents")
        if stage is not Stage.BASE:
            raise ValueError(f"{path} is a BEIR folder; this step needs records with "
                             f"{'negatives' if stage is Stage.MINED else 'candidates'}: run 'o1-embedder mine' first")
        return records, dataset
    if max_queries is not None or max_docs is not None:
        raise ValueError("--max-queries/--max-docs subset BEIR folders only")
    return RecordFile(path, stage), None


class JsonlWriter:
    """Append records to a JSON-lines file, one complete line per write, resumable.

    Opening an existing file: every complete line must be a JSON object with ``key`` (else
    :class:`RecordFormatError` naming the line, and the file is left as it was); their ``key`` values are
    :attr:`done`. Then a trailing partial line (a run killed mid-write) is cut off with a warning, or, when
    it is a whole record missing only its newline, kept and closed. ``overwrite=True`` starts an empty file.
    Each :meth:`write` issues one ``write`` of the whole line on an unbuffered file, then ``fsync``
    every ``sync_every`` lines and on :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, key: str = "query_id", *, overwrite: bool = False,
                 sync_every: int = 256, inputs: Iterable[str | os.PathLike | None] = ()):
        self.path = Path(path)
        self.key = key
        self.sync_every = sync_every
        self.done: set[str] = set()
        self.existing: list[dict] = []  # the first complete records already in the file (up to 1), for checks
        self.dropped_partial = 0
        self.written = 0
        check_output(self.path, inputs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "ab", buffering=0)  # no truncation before the lock is held
        try:
            _lock(self._handle, self.path)
            if overwrite:
                os.ftruncate(self._handle.fileno(), 0)
            else:
                self._recover()
        except BaseException:
            self._handle.close()
            raise

    def _recover(self) -> None:
        """Read what an earlier run wrote, checking every line before anything in the file changes; a last line
        without its newline is an interrupted write: dropped unless it is a whole record (then it is closed)."""
        content, records, tail = self._read(self.path, self.key)
        for record in records:
            self._keep(record)
        if tail:
            last = self._parse(tail, self.key)
            with open(self.path, "rb+") as handle:
                if last is not None:  # a whole record cut before its newline: keep it, close the line
                    handle.seek(len(content))
                    handle.write(b"\n")
                    self._keep(last)
                else:
                    self.dropped_partial = len(tail)
                    handle.truncate(len(content) - len(tail))
                    logger.warning("%s: dropped a partial last line (%d bytes) left by an interrupted run",
                                   self.path, self.dropped_partial)

    @classmethod
    def check(cls, path: str | os.PathLike, key: str = "query_id", *, overwrite: bool = False,
              inputs: Iterable[str | os.PathLike | None] = ()) -> None:
        """What opening ``path`` would refuse, found without changing it: a command runs this before it loads
        models, so a wrong output fails in a second, not after minutes of loading."""
        check_output(path, inputs)
        if not overwrite and Path(path).is_file():
            cls._read(Path(path), key)

    @classmethod
    def _read(cls, path: Path, key: str) -> tuple[bytes, list[dict], bytes]:
        """``(content, complete records, unterminated last line)``; :class:`RecordFormatError` when a complete
        line is not a JSON object with a string ``key``."""
        with open(path, "rb") as handle:
            content = handle.read()
        lines = content.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        records: list[dict] = []
        problems: list[str] = []
        total = 0
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            record = cls._parse(raw, key)
            if record is None:
                total += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append(f"{path}:{number}: not a JSON record with a string {key!r} "
                                    f"(a file this command did not write? use a new output or --overwrite)")
                continue
            records.append(record)
        if total:
            raise RecordFormatError(path, problems, total)
        return content, records, tail

    @staticmethod
    def _parse(raw: bytes, key: str) -> dict | None:
        """The record on one line, or ``None`` when it is not a JSON object with a string ``key``."""
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
            return None
        return record if isinstance(record, dict) and isinstance(record.get(key), str) else None

    def _keep(self, record: dict) -> None:
        self.done.add(record[self.key])
        if not self.existing:
            self.existing.append(record)

    def write(self, record: dict) -> None:
        data = dump_line(record)
        view = memoryview(data)
        while view:  # one write call in practice; a short write (rare) is completed by the loop
            written = self._handle.write(view)
            view = view[written:]
        self.done.add(record[self.key])
        self.written += 1
        if self.sync_every and self.written % self.sync_every == 0:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (links and relative paths resolved)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse an output that is one of the inputs (writing it would destroy the input) or a folder."""
    output = Path(output)
    for source in inputs:
        if source is not None and same_file(output, source):
            raise ValueError(f"{output} is also the input: writing it would destroy the input; "
                             f"choose another output file")
    if output.is_dir():
        raise ValueError(f"{output} is a folder; the output must be a file (e.g. {output / 'out.jsonl'})")
    check_creatable(output, "output")


def _lock(handle, path: Path) -> None:
    """Hold an exclusive advisory lock on an open output file, so two runs never write the same output.

    The lock ends with the process, so a killed run never leaves a stale lock. (No locking where the
    platform has no ``fcntl``.)
    """
    try:
        import fcntl
    except ImportError:  # Windows
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise RuntimeError(f"{path} is being written by another run (it holds the file's lock); wait for it to "
                           f"finish or choose another output file") from None


def failures_path(output: str | os.PathLike) -> Path:
    """Where a step reports the records it could not complete: ``NAME.failures.jsonl`` next to ``NAME.jsonl``."""
    output = Path(output)
    stem = output.name[:-len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(f"{stem}.failures.jsonl")


def write_records_atomic(path: str | os.PathLike, records: Iterable[dict],
                         inputs: Iterable[str | os.PathLike | None] = ()) -> int:
    """Write all records to a temporary sibling, then rename it into place. Returns the number written.

    An output that is one of ``inputs`` is refused before anything is read or written.
    """
    check_output(path, inputs)
    count = 0

    def write(handle) -> None:
        nonlocal count
        for record in records:
            handle.write(dump_line(record))
            count += 1

    atomic_write(path, write)
    return count
