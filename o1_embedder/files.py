"""Writing files so that no reader ever sees a half-written one."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def staging_dir(target: str | os.PathLike, prefix: str) -> Path:
    """A temporary sibling folder of ``target``, to be renamed into place, with the permissions a plain mkdir
    gives (``mkdtemp`` makes 0700: a saved model would be unreadable to other users and containers)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=Path(target).parent))
    os.chmod(path, 0o777 & ~_umask())
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Write ``path`` through ``write(binary handle)`` into a temporary sibling, fsync, then rename into place
    (with the permissions a plain ``open`` gives, not ``mkstemp``'s 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
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


def replace_folder(target: str | os.PathLike, write: Callable[[Path], None], *, prefix: str | None = None) -> Path:
    """Make the folder ``target`` through ``write(staging folder)``, then swap it into place: a reader sees the
    earlier folder or the new one, never a half-written one; if the swap fails, the earlier folder is put back."""
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target, prefix=prefix or f".{target.name}-")
    try:
        write(staging)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / target.name)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(old / target.name, target)  # the earlier folder back in place
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


#: what a write that ran out of space says, in the libraries that write models (OS, torch's zip writer, safetensors)
_FULL_SIGNS = ("no space left", "unexpected pos", "storagefull", "disk quota", "errno 28", "code: 28", "file too large")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is a write that failed for lack of space (``ENOSPC`` or the messages libraries give it)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return any(sign in str(err).lower() for sign in _FULL_SIGNS)


def disk_full_error(err: BaseException, path: str | os.PathLike, what: str, keep: str) -> OSError:
    """An ``OSError(ENOSPC)`` saying the disk is full, naming ``path``, the free space there and what is intact."""
    try:
        free = f"{shutil.disk_usage(Path(path).parent if not Path(path).exists() else path).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return OSError(errno.ENOSPC, f"the disk is full: writing {what} {path} failed ({free}; {type(err).__name__}: "
                                 f"{str(err)[:160]}); {keep}")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def looks_like_path(name: str) -> bool:
    """Whether a model name is meant as a local path (absolute, relative with ``.``, or more than one ``/``),
    rather than a hub id such as ``org/model``: a missing path then gets a clear error, not a hub lookup."""
    return os.path.isabs(name) or name.startswith(".") or name.count("/") > 1


def check_creatable(path: str | os.PathLike, what: str) -> None:
    """Refuse a path below a file: the nearest existing folder above ``path`` (or ``path`` itself) must be a folder,
    so the file or folder can be made there; checked before any work, not when the output is written."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists():
            if parent != path and not parent.is_dir():
                raise ValueError(f"{what} {path}: {parent} is a file, so nothing can be written below it")
            return
