"""``mteb.ModelMeta`` of an o1-embedder model, read from its files without loading the weights.

Tensor shapes and dtypes come from ``safetensors.safe_open`` (only the header is read). The revision of a local
folder is a content hash of its files (:func:`folder_revision`), so mteb files the results of a retrained model
apart from the previous one's, and its ``only-missing`` strategy never silently reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import torch
from mteb.models import ModelMeta
from mteb.types import Licenses
from safetensors import SafetensorError, safe_open

from ...generation.settings import GenerationSettings
from .options import GENERATION_OPTIONS, check_options, name_suffix
from .wrapper import O1EmbedderEncoderWrapper

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_MODEL_META_NAME", "folder_revision", "loaded_model_meta", "o1_model_meta"]

logger = logging.getLogger(__name__)

#: ``ModelMeta.name`` of the embedded default (``"o1-embedder"`` when no folder of that name exists).
DEFAULT_MODEL_META_NAME = "o1-embedder/default-SmolLM2-135M-Instruct"
_DEFAULT_BACKBONE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_LOCAL_ORG = "local"
_SMALL_FILE = 1 << 20          # files up to 1 MiB are hashed whole
_SAMPLES, _SAMPLE_BYTES = 256, 4096
#: ``ModelMeta`` fields computed here from the options; not overridable by keyword.
_DERIVED_FIELDS = {"loader", "loader_kwargs", "experiment_kwargs"}
_COMMON_FIELDS: dict[str, Any] = {
    "similarity_fn_name": "cosine", "framework": ["Sentence Transformers", "PyTorch"],
    "use_instructions": False,  # the query template is fixed by the model, not a task instruction
    "modalities": ["text"], "model_type": ["dense"],
}


def _model_meta(fields: dict[str, Any]) -> ModelMeta:
    """A validated ``ModelMeta`` of ``fields``, with ``None`` (unknown) for every other required field."""
    unknown = {name: None for name, field in ModelMeta.model_fields.items() if field.is_required()}
    return ModelMeta(**{**unknown, **fields})


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file's content; a corrupt file is named in the error."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


def _tensor_layout(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every tensor of a safetensors file, in name order, from its header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            slices = [(name, f.get_slice(name)) for name in sorted(f.keys())]
            return [(name, tuple(tensor.get_shape()), tensor.get_dtype()) for name, tensor in slices]
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None


def _hash_file(digest: Any, path: Path) -> None:
    """Add a file to ``digest``: whole up to 1 MiB; else its size, tensor layout and evenly spaced blocks."""
    size = path.stat().st_size
    digest.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        if size <= _SMALL_FILE:
            digest.update(f.read())
            return
        if path.suffix == ".safetensors":
            digest.update(repr(_tensor_layout(path)).encode())
        for i in range(_SAMPLES):  # first and last block included
            f.seek((size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
            digest.update(f.read(_SAMPLE_BYTES))


def folder_revision(path: str | os.PathLike) -> str:
    """A 16-hex revision for a model folder: a hash of every file except ``README.md`` and hidden ones (whole for
    files up to 1 MiB; for larger ones the size, the safetensors tensor layout and 256 evenly spaced 4 KiB blocks).

    Changes whenever configs, tokenizer, thinking settings or (trained) weights change; it is a content hash, not a
    git commit.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root)
        if rel.name == "README.md" or any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(str(rel.parent).encode())
        _hash_file(digest, file)
    return digest.hexdigest()[:16]


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a (possibly multimodal) ``config.json``."""
    return config.get("text_config") or config


def _parameter_counts(folder: Path, config: dict[str, Any]) -> tuple[int, int | None]:
    """(number of parameters, number of input-embedding parameters) from the safetensors headers."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    text = _text_config(config)
    vocab = text.get("vocab_size")
    total, embedding = 0, None
    for file in files:
        for name, shape, _ in _tensor_layout(file):
            count = math.prod(shape)
            total += count
            if embedding is None and name.endswith("embed_tokens.weight") and len(shape) == 2 \
                    and vocab in (None, shape[0]):
                embedding = count
    if embedding is None and vocab and text.get("hidden_size"):
        embedding = int(vocab) * int(text["hidden_size"])  # mteb's own heuristic
    return total, embedding


def _bytes_per_parameter(options: dict[str, Any], o1_config: dict[str, Any]) -> int:
    """Size of one parameter as loaded: ``model_kwargs["dtype"]``, else (or for ``"auto"``) the dtype saved with the
    model."""
    requested = str((options.get("model_kwargs") or {}).get("dtype", "auto")).replace("torch.", "")
    name = str(o1_config.get("dtype", "float32")) if requested == "auto" else requested
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must name a torch dtype (float32, float16, bfloat16), got {name!r}")
    return dtype.itemsize


def _card_metadata(folder: Path) -> dict[str, Any]:
    """``license`` and ``adapted_from`` (``base_model``) from the model card's YAML header, when present and valid."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    try:
        from huggingface_hub import metadata_load

        card = metadata_load(readme) or {}
    except Exception as e:  # a broken card must not stop an evaluation
        logger.warning("%s: cannot read the model card header (%s)", readme, e)
        return {}
    found: dict[str, Any] = {}
    license_ = card.get("license")
    if isinstance(license_, str) and license_.lower() in get_args(Licenses):
        found["license"] = license_.lower()
    base = card.get("base_model")
    if isinstance(base, list) and len(base) == 1:
        base = base[0]
    if isinstance(base, str) and "/" in base:
        found["adapted_from"] = base
    return found


def _default_model_folder() -> tuple[Path, dict[str, Any]]:
    """The embedded default as a folder (written once under the o1-embedder cache) and what is known about it."""
    from ... import __version__
    from ...generation.cache import default_cache_dir
    from ...model import materialize_default

    folder = default_cache_dir() / "models" / f"o1-embedder-default-{__version__}"
    if not (folder / "o1_embedder_config.json").is_file():
        materialize_default(folder)
    return folder, {"name": DEFAULT_MODEL_META_NAME, "license": "apache-2.0", "open_weights": True,
                    "adapted_from": _DEFAULT_BACKBONE_HUB_ID, "languages": ["eng-Latn"]}


def _hub_model_folder(hub_id: str, revision: str | None) -> tuple[Path, dict[str, Any]]:
    """A hub model's snapshot folder (the local cache when offline) and the fields its hub id implies."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(hub_id, revision=revision))
    except Exception as e:
        raise FileNotFoundError(f"{hub_id!r} is neither a local folder nor a model found on the Hugging Face Hub "
                                f"or in its local cache: {e}") from None
    return folder, {"name": hub_id, "revision": folder.name, "open_weights": True}


def _resolve_model_folder(path_or_name: str | os.PathLike, revision: str | None) -> tuple[Path, dict[str, Any]]:
    """The local folder of a model, and the ``ModelMeta`` fields implied by where it came from."""
    from ...model.loading import DEFAULT_MODEL_NAME

    text = os.fspath(path_or_name)
    if os.path.isdir(text):
        return Path(text).resolve(), {}
    if text == DEFAULT_MODEL_NAME:
        return _default_model_folder()
    if text.count("/") == 1 and not text.startswith((".", "/")):
        return _hub_model_folder(text, revision)
    raise FileNotFoundError(f"Model folder not found: {text}")


def _read_model_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``config.json``, ``o1_embedder_config.json``) of a checked o1-embedder model folder."""
    from ...model.module import CONFIG_FILE, check_model_folder

    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{folder} is not an o1-embedder model folder: {CONFIG_FILE} is missing")
    check_model_folder(str(folder))
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"Model folder {folder} is missing: modules.json")
    return _read_json(folder / "config.json"), _read_json(folder / CONFIG_FILE)


def _check_generation(options: dict[str, Any], o1_config: dict[str, Any]) -> None:
    """Fail now, not after mteb started, when the options and the saved settings make invalid generation settings."""
    generation = {k: v for k, v in options.items() if k in GENERATION_OPTIONS}
    if generation:
        GenerationSettings.from_dict(o1_config.get("generation") or {}).replace(**generation)


def o1_model_meta(path_or_name: str | os.PathLike, *, name: str | None = None, revision: str | None = None,
                  **kwargs: Any) -> ModelMeta:
    """``mteb.ModelMeta`` of a saved o1-embedder model, read from its files (the weights are not loaded).

    Args:
        path_or_name: a model folder; a hub id (``org/name``) resolved through the Hugging Face cache (offline with
            ``HF_HUB_OFFLINE=1``); or ``"o1-embedder"``: the embedded default, written once under the o1-embedder
            cache folder.
        name: ``ModelMeta.name`` (``org/model``). Default: the hub id, ``o1-embedder/default-...`` for the default,
            else ``local/{folder name}``; options that change scores add to it (``local/m-think_False``), because
            mteb's ``to_dataframe`` averages the experiments of one name.
        revision: default: the hub commit, else :func:`folder_revision` (a content hash of the folder).
        **kwargs: ``ModelMeta`` fields (``license``, ``open_weights``, ``languages``, ``release_date``,
            ``reference``, ``training_datasets``, ``citation``, ...) overriding what is read from the files (the model
            card header gives ``license`` and ``adapted_from``), and the wrapper's options
            (:data:`~o1_embedder.evaluation.mteb.options.WRAPPER_OPTIONS`). Options become loader kwargs and mteb
            experiment kwargs, so results with other thinking settings are stored apart.

    Computed: ``n_parameters`` (all tensors of the safetensors files), ``n_embedding_parameters`` (the input
    embedding), ``memory_usage_mb`` (in the dtype saved with the model unless ``model_kwargs`` sets one),
    ``max_tokens`` (the document truncation, ``max_document_tokens``), ``embed_dim`` (hidden size), cosine
    similarity, ``use_instructions=False``, ``model_type=["dense"]``.
    """
    overrides = {k: v for k, v in kwargs.items() if k in ModelMeta.model_fields and k not in _DERIVED_FIELDS}
    options = check_options({k: v for k, v in kwargs.items() if k not in overrides}, "o1_model_meta()")
    folder, implied = _resolve_model_folder(path_or_name, revision)
    config, o1_config = _read_model_folder(folder)
    _check_generation(options, o1_config)
    n_parameters, n_embedding = _parameter_counts(folder, config)
    fields: dict[str, Any] = {
        **_COMMON_FIELDS, **_card_metadata(folder), **implied,
        "name": name or (implied.get("name") or f"{_LOCAL_ORG}/{folder.name}") + name_suffix(options),
        "revision": revision or implied.get("revision") or folder_revision(folder),
        "n_parameters": n_parameters, "n_embedding_parameters": n_embedding,
        "memory_usage_mb": round(n_parameters * _bytes_per_parameter(options, o1_config) / 2**20, 1),
        "max_tokens": o1_config.get("max_document_tokens"), "embed_dim": _text_config(config).get("hidden_size"),
        **{k: v for k, v in overrides.items() if v is not None},
        "loader": O1EmbedderEncoderWrapper, "loader_kwargs": {"model_path": str(folder), **options},
        "experiment_kwargs": options or None,
    }
    return _model_meta(fields)


def loaded_model_meta(model: SentenceTransformer, *, revision: str | None, options: dict[str, Any]) -> ModelMeta:
    """``ModelMeta`` of an in-memory model: exact parameter counts, a revision hashed from the weights fingerprint
    and the module config. It has no loader: an in-memory model cannot be loaded again by name."""
    module = model[0]
    config = json.dumps(module.get_config_dict(), sort_keys=True, default=str)
    card_name = getattr(getattr(model, "model_card_data", None), "model_name", None)
    parameters = list(module.model.parameters())
    embedding = module.model.get_input_embeddings()
    return _model_meta({
        **_COMMON_FIELDS, "loader": None,
        "name": (card_name if card_name and "/" in card_name else f"{_LOCAL_ORG}/o1-embedder-in-memory")
        + name_suffix(options),
        "revision": revision or hashlib.sha256(f"{module.fingerprint()}\n{config}".encode()).hexdigest()[:16],
        "n_parameters": sum(p.numel() for p in parameters),
        "n_embedding_parameters": int(embedding.weight.numel()) if embedding is not None else None,
        "memory_usage_mb": round(sum(p.numel() * p.element_size() for p in parameters) / 2**20, 1),
        "max_tokens": module.max_document_tokens, "embed_dim": module.get_embedding_dimension(),
        "experiment_kwargs": options or None,
    })
