"""Reading JSON-lines files with every problem collected as ``path:line: message``, then raised at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["MAX_PROBLEMS", "FileFormatError", "Problems", "json_lines", "text_lines"]

#: problems listed in one error message (the total is always given)
MAX_PROBLEMS = 20


class FileFormatError(ValueError):
    """A file is malformed. ``problems`` holds every ``path:line: message`` found (up to the limit)."""

    def __init__(self, path: Path, problems: list[str], total: int):
        self.path = Path(path)
        self.problems = list(problems)
        self.total = total
        lines = [f"{self.path}: {total} problem{'s' if total != 1 else ''} found"]
        lines += [f"  {p}" for p in problems]
        if total > len(problems):
            lines.append(f"  ... and {total - len(problems)} more")
        super().__init__("\n".join(lines))


class Problems:
    """Collects ``path:line: message`` strings for one file, then raises them all at once as ``error``."""

    def __init__(self, path: str | Path, error: type[FileFormatError] = FileFormatError, limit: int = MAX_PROBLEMS):
        self.path = Path(path)
        self.error = error
        self.limit = limit
        self.items: list[str] = []
        self.total = 0

    def add(self, line: int | None, message: str) -> None:
        self.total += 1
        if len(self.items) < self.limit:
            where = f"{self.path}:{line}" if line is not None else str(self.path)
            self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.total:
            raise self.error(self.path, self.items, self.total)


def text_lines(path: str | Path, problems: Problems) -> Iterator[tuple[int, str]]:
    """``(1-based line number, text)`` of the non-blank lines (a BOM on the first line is dropped); a line that
    is not valid UTF-8 is a problem."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                problems.add(number, f"not valid UTF-8 ({err.reason} at byte {err.start})")
                continue
            if line.strip():
                yield number, line.rstrip("\r\n")


def json_lines(path: str | Path, problems: Problems) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of every non-blank line; malformed JSON is a problem, not an exception."""
    for number, line in text_lines(path, problems):
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            problems.add(number, f"malformed JSON ({err.msg} at column {err.colno})")
        except (ValueError, RecursionError) as err:  # an integer too long to convert, nesting too deep
            problems.add(number, f"malformed JSON ({type(err).__name__}: {str(err)[:100]})")
