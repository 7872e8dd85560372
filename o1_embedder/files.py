"""Writing files so that no reader ever sees a half-written one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Write ``path`` through ``write(binary handle)`` into a temporary sibling, fsync, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def looks_like_path(name: str) -> bool:
    """Whether a model name is meant as a local path (absolute, relative with ``.``, or more than one ``/``),
    rather than a hub id such as ``org/model``: a missing path then gets a clear error, not a hub lookup."""
    return os.path.isabs(name) or name.startswith(".") or name.count("/") > 1
