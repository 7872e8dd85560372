"""A user's document collection, read and validated before any model loads (the input of ``o1-embedder adapt``).

Three layouts are read:

* a BEIR folder (only ``corpus.jsonl`` is read; queries and judgments are never opened here);
* a ``.jsonl`` file in BEIR's corpus format (``{"_id": str, "title": str (optional), "text": str}`` per line);
* a folder of ``.txt`` / ``.md`` files, searched recursively in sorted order; a document's id is its path
  below the folder, a Markdown file's title its first ``# `` heading (removed from its text).

Every problem is collected and reported at once as ``path:line: what is wrong`` (or ``path: ...`` for a file
of a folder): duplicate ids, binary or non-UTF-8 content, a collection without any document. A document
with neither title nor text (real collections have a few: Cranfield has two) holds nothing to learn from: it
is left out and named in :attr:`Corpus.empty` (``path:line`` or file name), which callers report. The
collection's content hash (SHA-256 over ids, titles and texts in order) identifies it, so a run can refuse
a collection that changed under it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .beir import BeirFormatError, document_text
from .jsonl import Problems, json_lines

__all__ = ["Corpus", "CorpusError", "load_corpus", "TEXT_SUFFIXES"]

#: the file types a folder corpus is made of
TEXT_SUFFIXES = (".txt", ".md")


class CorpusError(BeirFormatError):
    """A document collection is malformed; ``problems`` lists every ``path:line: message`` found."""


@dataclass
class Corpus:
    """Documents in input order: ``ids[i]``, ``titles[i]`` (``""`` when none) and ``texts[i]``."""

    ids: list[str]
    titles: list[str]
    texts: list[str]
    source: Path
    layout: str  # "beir", "jsonl" or "folder"
    #: where the documents without any text are (``path:line: id`` or the file), left out of the lists above
    empty: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Corpus({self.source}, layout={self.layout!r}, documents={len(self)})"

    def full_texts(self) -> list[str]:
        """Each document as a model embeds it (``"title text"``, as BEIR joins them)."""
        return [document_text({"title": t, "text": x}) for t, x in zip(self.titles, self.texts)]

    def as_beir_corpus(self) -> dict[str, dict[str, str]]:
        return {i: {"title": t, "text": x} for i, t, x in zip(self.ids, self.titles, self.texts)}

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for parts in zip(self.ids, self.titles, self.texts):
            for part in parts:
                digest.update(part.encode("utf-8"))
                digest.update(b"\x1f")
            digest.update(b"\x1e")
        return digest.hexdigest()

    def words(self) -> int:
        return sum(len(t.split()) for t in self.texts)


def load_corpus(path: str | os.PathLike, *, min_documents: int = 1) -> Corpus:
    """Read and validate a collection (see the module docstring); at least ``min_documents`` are required."""
    path = Path(path)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        corpus = _read_jsonl_corpus(path / "corpus.jsonl", layout="beir")
    elif path.is_file():
        if path.suffix != ".jsonl":
            raise CorpusError(path, [f"{path}: expected a BEIR folder, a corpus .jsonl file or a folder of "
                                     f"{' / '.join(TEXT_SUFFIXES)} files"], 1)
        corpus = _read_jsonl_corpus(path, layout="jsonl")
    elif path.is_dir():
        corpus = _read_folder(path)
    else:
        raise FileNotFoundError(f"corpus not found: {path}")
    if len(corpus) < min_documents:
        raise CorpusError(path, [f"{path}: {len(corpus)} document{'s' if len(corpus) != 1 else ''}; at least "
                                 f"{min_documents} are needed"], 1)
    return corpus


def _binary(text: str) -> bool:
    """Text with NUL bytes or mostly control characters is not a document (a binary file read as UTF-8)."""
    if "\x00" in text:
        return True
    controls = sum(1 for c in text[:4096] if ord(c) < 32 and c not in "\t\n\r\f\v")
    return controls > 0.1 * min(len(text), 4096)


def _read_jsonl_corpus(path: Path, layout: str) -> Corpus:
    problems = Problems(path, CorpusError)
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    first_line: dict[str, int] = {}
    empty: list[str] = []
    for number, record in json_lines(path, problems):
        if not isinstance(record, dict):
            problems.add(number, f"expected a JSON object, got {type(record).__name__}")
            continue
        doc_id, title, text = record.get("_id"), record.get("title", ""), record.get("text")
        wrong = [f"field {key!r} must be a string, got {type(value).__name__}"
                 for key, value in (("_id", doc_id), ("title", title), ("text", text))
                 if value is not None and not isinstance(value, str)]
        wrong += [f"missing field {key!r}" for key, value in (("_id", doc_id), ("text", text)) if value is None]
        if wrong:
            for reason in wrong:
                problems.add(number, reason)
            continue
        doc_id = doc_id.strip()
        message = _document_problem(doc_id, title, text, first_line, number)
        if message:
            problems.add(number, message)
            continue
        first_line[doc_id] = number
        if not text.strip() and not title.strip():
            empty.append(f"{path}:{number}: {doc_id}")
            continue
        ids.append(doc_id)
        titles.append(" ".join(title.split()))
        texts.append(text.strip())
    if not ids and not problems.total:
        problems.add(None, "no document with text"
                     + (f" ({len(empty)} empty ones)" if empty else " (the file is empty)"))
    problems.raise_if_any()
    return Corpus(ids, titles, texts, source=path, layout=layout, empty=empty)


def _document_problem(doc_id: str, title: str, text: str, first_line: dict[str, int], number: int) -> str | None:
    if not doc_id:
        return "field '_id' is empty"
    if doc_id in first_line:
        return f"duplicate _id {doc_id!r} (first seen on line {first_line[doc_id]})"
    for key, value in (("_id", doc_id), ("title", title), ("text", text)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"field {key!r} is not valid Unicode (a lone surrogate)"
    if _binary(text):
        return "field 'text' looks binary (NUL bytes or control characters), not a document"
    return None


def _read_folder(root: Path) -> Corpus:
    problems = Problems(root, CorpusError)
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    empty: list[str] = []
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for file in files:
        raw = file.read_bytes()
        if b"\x00" in raw:
            problems.add(None, f"{file.relative_to(root)}: binary content (NUL bytes), not a text document")
            continue
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            problems.add(None, f"{file.relative_to(root)}: not valid UTF-8 ({err.reason} at byte {err.start})")
            continue
        title = ""
        if file.suffix.lower() == ".md":
            title, content = _markdown_title(content)
        if not content.strip() and not title:
            empty.append(str(file))
            continue
        if _binary(content):
            problems.add(None, f"{file.relative_to(root)}: control characters, not a text document")
            continue
        ids.append(file.relative_to(root).as_posix())
        titles.append(title)
        texts.append(content.strip())
    if not files:
        problems.add(None, f"no {' / '.join(TEXT_SUFFIXES)} file in the folder (a BEIR folder needs corpus.jsonl)")
    elif not ids and not problems.total:
        problems.add(None, f"no document with text ({len(empty)} empty files)")
    problems.raise_if_any()
    return Corpus(ids, titles, texts, source=root, layout="folder", empty=empty)


def _markdown_title(content: str) -> tuple[str, str]:
    """The first level-1 heading (``# Title``) as the title, and the text without it."""
    lines = content.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return " ".join(line[2:].split()), "\n".join(lines[:i] + lines[i + 1:])
        if line.strip():
            break
    return "", content
