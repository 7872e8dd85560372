"""The mteb encoder for o1-embedder models: queries think, documents don't.

mteb calls ``encode(..., prompt_type=PromptType.query)`` for queries and ``PromptType.document`` (or ``None`` in
symmetric tasks: STS, clustering, classification) for everything else. Queries go to ``encode_query`` with the
wrapper's ``think`` setting; everything else goes to ``encode_document``, which never thinks, so a corpus costs
what it costs with any LLM embedder.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper
from mteb.models.abs_encoder import get_prompt
from mteb.types import PromptType

from .options import CONFIGURE_OPTIONS, split_options

if TYPE_CHECKING:
    from mteb import TaskMetadata
    from sentence_transformers import SentenceTransformer
    from torch.utils.data import DataLoader

    from ...model import O1Embedder

__all__ = ["O1EmbedderEncoderWrapper"]

_MTEB_PROMPT_NAMES = ("query", "document")


def _torch_device(device: str | int | None) -> str | None:
    """mteb's ``run --device`` is an integer GPU index; everything else passes through."""
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        return f"cuda:{int(device)}"
    return device


def _load(source: str | os.PathLike | SentenceTransformer, device: str | int | None,
          model_kwargs: dict[str, Any] | None, load_kwargs: dict[str, Any]) -> SentenceTransformer:
    """The model to wrap: loaded with :func:`o1_embedder.load_model` from a name or folder, or the one given."""
    from ...model import load_model

    if isinstance(source, (str, os.PathLike)):
        if model_kwargs:
            load_kwargs = {**load_kwargs, "model_kwargs": dict(model_kwargs)}
        return load_model(os.fspath(source), device=_torch_device(device), **load_kwargs)
    if load_kwargs or model_kwargs:
        raise TypeError(f"loading options {sorted(load_kwargs) + (['model_kwargs'] if model_kwargs else [])} "
                        f"do not apply to a model that is already loaded")
    if device is not None:
        source.to(_torch_device(device))
    return source


def _o1_module(model: SentenceTransformer, source: object) -> O1Embedder:
    """The model's ``O1Embedder`` module; a clear error for any other Sentence-Transformers model."""
    from ...model import O1Embedder

    module = model[0]
    if not isinstance(module, O1Embedder):
        raise TypeError(f"{source!r} is not an o1-embedder model: its first module is {type(module).__name__}")
    return module


def _apply_settings(module: O1Embedder, options: dict[str, Any]) -> None:
    """Apply the thinking options to the module in place (its saved settings stay where they are not given)."""
    module.configure(**{name: options[name] for name in CONFIGURE_OPTIONS if name in options})
    if "use_thought_cache" in options:
        module.use_thought_cache = options["use_thought_cache"]


class O1EmbedderEncoderWrapper(SentenceTransformerEncoderWrapper):
    """mteb encoder for o1-embedder models: ``encode_query`` (think, then embed) for queries, ``encode_document``
    (embed directly) for everything else. mteb's ``encode_kwargs`` (``batch_size``, ``show_progress_bar``, ...) are
    passed through to Sentence-Transformers.

    Args:
        model: a loaded o1-embedder ``SentenceTransformer``, or a model folder / hub id / ``"o1-embedder"`` (loaded
            with :func:`o1_embedder.load_model`). As an mteb loader this is ``ModelMeta.name`` and the folder comes
            in ``model_path``.
        revision: the revision mteb records (``ModelMeta.revision``).
        device: torch device; an int (``mteb run --device 0``) means that CUDA device.
        model_prompts: mteb prompts; default: the model's ``query`` and ``document`` prompts.
        model_path: folder to load when ``model`` is a name (set by :func:`o1_model_meta`).
        **kwargs: the options of :data:`~o1_embedder.evaluation.mteb.options.OPTIONS` (``think``,
            ``num_thoughts``, every :class:`~o1_embedder.generation.GenerationSettings` field, ``use_thought_cache``,
            ``batch_size``, ``query_batch_size``, ``model_kwargs``; unset ones keep the model's saved settings); any
            other keyword goes to ``SentenceTransformer`` when the model is loaded here.
    """

    mteb_model_meta: ModelMeta

    def __init__(self, model: str | os.PathLike | SentenceTransformer, revision: str | None = None,
                 device: str | int | None = None, model_prompts: dict[str, str] | None = None, *,
                 model_path: str | os.PathLike | None = None, **kwargs: Any) -> None:
        options, load_kwargs = split_options(kwargs, type(self).__name__)
        source = model_path if model_path is not None else model
        st_model = _load(source, device, options.get("model_kwargs"), load_kwargs)
        module = _o1_module(st_model, source)
        _apply_settings(module, options)
        self.think: bool = module.think
        self.batch_size: int | None = options.get("batch_size")
        self.query_batch_size: int | None = options.get("query_batch_size")
        # mteb takes the model's prompts as its own and warns about each name it has no task for (the names other
        # frameworks send, README); it is shown only query and document
        prompts = st_model.prompts
        st_model.prompts = {name: prompts[name] for name in _MTEB_PROMPT_NAMES if name in prompts}
        try:
            with warnings.catch_warnings():  # mteb's generic metadata extraction warns about deprecated names
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                super().__init__(st_model, revision=revision, model_prompts=model_prompts)
        finally:  # the wrapper passes self.model_prompts' prompt with each call; the model keeps all its names
            st_model.prompts = prompts
        self.mteb_model_meta = self._describe(source, revision, options)

    def _describe(self, source: object, revision: str | None, options: dict[str, Any]) -> ModelMeta:
        """The ``ModelMeta`` of what was loaded: from the folder's files, or from the weights in memory.

        (mteb replaces it with the registered meta when it loads the model itself.)
        """
        from .meta import loaded_model_meta, o1_model_meta  # meta.py names this class as its loader

        if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            return o1_model_meta(source, revision=revision, **options)
        return loaded_model_meta(self.model, revision=revision, options=options)

    @property
    def module(self) -> O1Embedder:
        """The ``O1Embedder`` module (its ``stats`` count generated thoughts and tokens)."""
        return self.model[0]

    def encode(self, inputs: DataLoader, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> Any:
        """Embed the texts of ``inputs``: queries think (``self.think``), everything else is embedded directly."""
        features = getattr(inputs.dataset, "features", None) or {}
        other = [m for m in ("image", "audio", "video") if m in features]
        if other:
            raise ValueError(f"o1-embedder models embed text only; task {task_metadata.name} has {other} inputs")
        texts = [text for batch in inputs for text in batch["text"]]
        prompt = get_prompt(self.model_prompts, task_metadata, prompt_type)
        if self.batch_size is not None:
            kwargs["batch_size"] = self.batch_size
        if prompt_type == PromptType.query:
            if self.query_batch_size is not None:
                kwargs["batch_size"] = self.query_batch_size
            return self.model.encode_query(texts, prompt=prompt, think=self.think, **kwargs)
        return self.model.encode_document(texts, prompt=prompt, **kwargs)
