"""Persistent thought cache (SQLite).

A thought is stored under a key derived from everything that determines it: the backbone fingerprint,
the prompt format and query length limit, the generation settings (seed included), the sample index
and the query text. With it the cache keeps the thought's token ids and the query+thought embedding
(float32), so a repeated ``encode_query`` on the same queries neither generates nor runs the model.

Location: ``O1_EMBEDDER_THOUGHT_CACHE`` (a file path, or ``off`` to disable), else
``$XDG_CACHE_HOME/o1_embedder/thoughts.sqlite`` (``~/.cache/...``). SQLite in WAL mode: any number of
concurrent readers, writers serialised by SQLite's own locking; every write is one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


class ThoughtCache:
    """Thoughts on disk, looked up and stored in bulk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS thoughts (key TEXT PRIMARY KEY, query TEXT NOT NULL, sample INTEGER NOT "
                "NULL, thought TEXT NOT NULL, token_ids TEXT NOT NULL, embedding BLOB)"
            )

    @classmethod
    def from_env(cls) -> ThoughtCache | None:
        """The cache named by ``O1_EMBEDDER_THOUGHT_CACHE`` (``None`` if it says off), or the default one."""
        value = os.environ.get(ENV_VAR)
        if value is not None and value.strip().lower() in _OFF:
            return None
        return cls(value or default_cache_dir() / "thoughts.sqlite")

    @contextlib.contextmanager
    def _connect(self):
        """One connection per operation (safe across threads and processes), committed and closed after."""
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def get_many(self, keys: list[str]) -> dict[str, CachedThought]:
        found: dict[str, CachedThought] = {}
        unique = list(dict.fromkeys(keys))
        with self._connect() as conn:
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                rows = conn.execute(
                    f"SELECT key, thought, token_ids, embedding FROM thoughts WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, thought, token_ids, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32).copy() if blob is not None else None
                    found[key] = CachedThought(thought, json.loads(token_ids), vector)
        return found

    def put_many(self, rows: list[tuple[str, str, int, CachedThought]]) -> None:
        """Store ``(key, query, sample_index, thought)`` rows in one transaction."""
        if not rows:
            return
        with self._connect() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO thoughts (key, query, sample, thought, token_ids, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(k, q, s, t.text, json.dumps(t.token_ids),
                  None if t.embedding is None else np.asarray(t.embedding, dtype=np.float32).tobytes())
                 for k, q, s, t in rows],
            )

    def __len__(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM thoughts").fetchone()[0]

    def clear(self) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM thoughts")

    def __repr__(self) -> str:
        return f"ThoughtCache({str(self.path)!r})"
