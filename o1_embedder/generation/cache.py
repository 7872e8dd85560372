"""Persistent thought cache (SQLite).

A thought is stored under a key derived from everything that determines it: the backbone fingerprint,
the prompt format and query length limit, the generation settings (seed included), the sample index
and the query text. With it the cache keeps the thought's token ids and the query+thought embedding
(float32), so a repeated ``encode_query`` on the same queries neither generates nor runs the model.

Location: ``O1_EMBEDDER_THOUGHT_CACHE`` (a file path, or ``off`` to disable), else
``$XDG_CACHE_HOME/o1_embedder/thoughts.sqlite`` (``~/.cache/...``). SQLite in WAL mode: any number of
concurrent readers, writers serialised by SQLite's own locking; every write is one transaction.

The cache never breaks encoding: a file that cannot be created, opened, read or written (corrupt,
read-only, locked past ``timeout`` seconds, a folder in its place, a read-only home) gives one warning
naming the path and the reason, and the cache goes on in memory for the rest of the process (a read-only
cache that can still be read keeps serving its thoughts).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

ENV_VAR = "O1_EMBEDDER_THOUGHT_CACHE"
_OFF = {"", "0", "off", "false", "no", "none"}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "o1_embedder"


def thought_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


@dataclass
class CachedThought:
    text: str
    token_ids: list[int]
    embedding: np.ndarray | None = None  # float32 query+thought embedding, when known

    def __eq__(self, other) -> bool:
        if not isinstance(other, CachedThought):
            return NotImplemented
        same_vector = (self.embedding is None and other.embedding is None) or (
            self.embedding is not None and other.embedding is not None
            and np.array_equal(self.embedding, other.embedding))
        return self.text == other.text and self.token_ids == other.token_ids and same_vector


class ThoughtCacheWarning(UserWarning):
    """The thought cache file cannot be used; thoughts are kept in memory instead."""


class ThoughtCache:
    """Thoughts on disk, looked up and stored in bulk; degrades to memory instead of failing (see above)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 10.0):
        self.path = Path(path)
        self.timeout = timeout
        self._memory: dict[str, tuple[str, int, CachedThought]] = {}
        self._readable = self._writable = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS thoughts (key TEXT PRIMARY KEY, query TEXT NOT NULL, sample INTEGER "
                    "NOT NULL, thought TEXT NOT NULL, token_ids TEXT NOT NULL, embedding BLOB)"
                )
        except (sqlite3.Error, OSError) as err:
            if self._can_read():  # e.g. a read-only file or folder that still holds thoughts
                self._degrade(err, reading=False)
            else:
                self._degrade(err, reading=True)

    @property
    def in_memory(self) -> bool:
        """Whether new thoughts are kept in memory only (the file could not be written)."""
        return not self._writable

    def _can_read(self) -> bool:
        try:
            with self._connect(read_only=True) as conn:
                conn.execute("SELECT key FROM thoughts LIMIT 1").fetchall()
            return True
        except (sqlite3.Error, OSError):
            return False

    def _degrade(self, err: BaseException, *, reading: bool) -> None:
        if reading and self._readable:
            self._readable = False
        if not self._writable:
            return
        self._writable = False
        message = (f"thought cache {self.path} cannot be {'used' if reading else 'written'} "
                   f"({type(err).__name__}: {err}); keeping thoughts in memory for this process "
                   f"(set {ENV_VAR} to another file, or to 'off')")
        warnings.warn(message, ThoughtCacheWarning, stacklevel=3)
        logger.warning("%s", message)

    @classmethod
    def from_env(cls) -> ThoughtCache | None:
        """The cache named by ``O1_EMBEDDER_THOUGHT_CACHE`` (``None`` if it says off), or the default one."""
        value = os.environ.get(ENV_VAR)
        if value is not None and value.strip().lower() in _OFF:
            return None
        return cls(value or default_cache_dir() / "thoughts.sqlite")

    @contextlib.contextmanager
    def _connect(self, read_only: bool = False):
        """One connection per operation (safe across threads and processes), committed and closed after."""
        if read_only:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.timeout)
        else:
            conn = sqlite3.connect(self.path, timeout=self.timeout)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def get_many(self, keys: list[str]) -> dict[str, CachedThought]:
        found = {k: self._memory[k][2] for k in keys if k in self._memory}
        unique = [k for k in dict.fromkeys(keys) if k not in found]
        if not unique or not self._readable:
            return found
        try:
            with self._connect(read_only=not self._writable) as conn:
                for start in range(0, len(unique), 500):
                    chunk = unique[start:start + 500]
                    rows = conn.execute(
                        f"SELECT key, thought, token_ids, embedding FROM thoughts WHERE key IN "
                        f"({','.join('?' * len(chunk))})", chunk,
                    ).fetchall()
                    for key, thought, token_ids, blob in rows:
                        try:
                            vector = np.frombuffer(blob, dtype=np.float32).copy() if blob is not None else None
                            ids = json.loads(token_ids)
                        except (ValueError, TypeError):  # one damaged row is a miss, the rest of the cache stays
                            continue
                        if vector is not None and not np.isfinite(vector).all():
                            continue  # NaN or infinite values (a poisoned or damaged row): a miss, generated again
                        if not isinstance(thought, str) or not isinstance(ids, list):
                            continue
                        found[key] = CachedThought(thought, ids, vector)
        except (sqlite3.Error, OSError) as err:
            self._degrade(err, reading=True)
        return found

    def put_many(self, rows: list[tuple[str, str, int, CachedThought]]) -> None:
        """Store ``(key, query, sample_index, thought)`` rows in one transaction (in memory when the file fails)."""
        if not rows:
            return
        if self._writable:
            try:
                with self._connect() as conn:
                    conn.executemany(
                        "INSERT OR REPLACE INTO thoughts (key, query, sample, thought, token_ids, embedding) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [(k, q, s, t.text, json.dumps(t.token_ids),
                          None if t.embedding is None else np.asarray(t.embedding, dtype=np.float32).tobytes())
                         for k, q, s, t in rows],
                    )
                return
            except (sqlite3.Error, OSError) as err:
                self._degrade(err, reading=False)
        for key, query, sample, thought in rows:
            self._memory[key] = (query, sample, thought)

    def __len__(self) -> int:
        stored = 0
        if self._readable:
            try:
                with self._connect(read_only=not self._writable) as conn:
                    stored = conn.execute("SELECT COUNT(*) FROM thoughts").fetchone()[0]
            except (sqlite3.Error, OSError) as err:
                self._degrade(err, reading=True)
        return stored + len(self._memory)

    def clear(self) -> None:
        self._memory.clear()
        if self._writable:
            try:
                with self._connect() as conn:
                    conn.execute("DELETE FROM thoughts")
            except (sqlite3.Error, OSError) as err:
                self._degrade(err, reading=False)

    def __repr__(self) -> str:
        return f"ThoughtCache({str(self.path)!r})"
