"""Registering o1-embedder models and local tasks with mteb, so that mteb finds them by name.

``mteb.get_model(NAME)`` and ``mteb run -m NAME`` find a model only in mteb's model registry, ``mteb.get_task(NAME)``
and ``mteb run -t NAME`` a task only in its task registry. :func:`register` adds an o1-embedder ``ModelMeta``;
:func:`registered` adds models and local task classes for the duration of a ``with`` block. mteb's own models and
tasks are never replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from mteb.abstasks import AbsTask
from mteb.models import ModelMeta

from .meta import o1_model_meta
from .tasks import LocalBeirRetrieval
from .wrapper import O1EmbedderEncoderWrapper

__all__ = ["is_o1_embedder", "register", "register_model", "registered", "unregister"]


def _mteb_registries() -> tuple[dict[str, ModelMeta], dict[str, type[AbsTask]]]:
    """mteb's in-process model and task registries: the only private mteb state this package touches.

    mteb 2.26 has no public call that adds a model or a task by name: ``get_model_meta`` / ``get_model`` (and so
    ``mteb run -m``) look names up only in ``mteb.models.model_implementations.MODEL_REGISTRY``, ``get_task(s)``
    (and ``mteb run -t``) only in ``mteb.get_tasks._TASKS_REGISTRY``; both are filled from mteb's own modules at
    import time. Everything else here goes through mteb's public API.
    """
    from mteb.get_tasks import _TASKS_REGISTRY
    from mteb.models.model_implementations import MODEL_REGISTRY

    return MODEL_REGISTRY, _TASKS_REGISTRY


def is_o1_embedder(meta: ModelMeta | None) -> bool:
    """Whether ``meta`` describes an o1-embedder model (loaded by :class:`O1EmbedderEncoderWrapper`)."""
    return meta is not None and meta.loader is O1EmbedderEncoderWrapper


def _checked_model(meta: ModelMeta) -> ModelMeta:
    """``meta`` if it can be registered: named, loadable, and not shadowing one of mteb's own models."""
    if meta.name is None:
        raise ValueError("ModelMeta.name is required for registration")
    if meta.loader is None:
        raise ValueError(f"{meta.name}: ModelMeta has no loader; build it with o1_model_meta()")
    existing = _mteb_registries()[0].get(meta.name)
    if existing is not None and not is_o1_embedder(existing):
        raise ValueError(f"{meta.name!r} is one of mteb's own models; choose another name")
    return meta


def _checked_task(task: type[LocalBeirRetrieval]) -> type[LocalBeirRetrieval]:
    """``task`` if it can be registered: its name is not one of mteb's own tasks."""
    existing = _mteb_registries()[1].get(task.metadata.name)
    if existing is not None and not issubclass(existing, LocalBeirRetrieval):
        raise ValueError(f"Task name {task.metadata.name!r} is one of mteb's own tasks; give the local task another "
                         f"name (NAME=PATH)")
    return task


def register(meta: ModelMeta) -> ModelMeta:
    """Put ``meta`` into mteb's in-process model registry: ``mteb.get_model(meta.name)`` then loads it.

    Replaces an earlier o1-embedder registration of the same name; refuses to shadow one of mteb's own models.
    """
    checked = _checked_model(meta)
    assert checked.name is not None  # _checked_model refuses a nameless meta
    _mteb_registries()[0][checked.name] = checked
    return meta


def unregister(name: str) -> ModelMeta | None:
    """Remove an o1-embedder registration (mteb's own models are left alone); returns what was removed."""
    models = _mteb_registries()[0]
    return models.pop(name) if is_o1_embedder(models.get(name)) else None


def register_model(path_or_name: str | os.PathLike, **kwargs: Any) -> ModelMeta:
    """``register(o1_model_meta(path_or_name, **kwargs))``: returns the meta; use ``meta.name`` with mteb."""
    return register(o1_model_meta(path_or_name, **kwargs))


@contextmanager
def _entries(registry: dict[str, Any], entries: Mapping[str, Any]) -> Iterator[None]:
    """``registry`` with ``entries`` added for a ``with`` block; what was there before is put back after."""
    missing = object()
    saved = {key: registry.get(key, missing) for key in entries}
    registry.update(entries)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is missing:
                registry.pop(key, None)
            else:
                registry[key] = old


@contextmanager
def registered(models: Sequence[ModelMeta] = (), tasks: Sequence[type[LocalBeirRetrieval]] = ()) -> Iterator[None]:
    """Register models and local task classes (see :func:`~o1_embedder.evaluation.mteb.beir_task_class`) for the
    duration of a ``with`` block, so that ``mteb.get_model(name)``, ``mteb.get_task(name)`` and ``mteb run -m/-t``
    find them. Everything is checked before anything is registered."""
    model_registry, task_registry = _mteb_registries()
    model_entries = {meta.name: _checked_model(meta) for meta in models}
    task_entries = {task.metadata.name: _checked_task(task) for task in tasks}
    with _entries(model_registry, model_entries), _entries(task_registry, task_entries):
        yield
