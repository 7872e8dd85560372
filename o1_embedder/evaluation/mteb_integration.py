"""MTEB (2.26) integration: an encoder wrapper, ``ModelMeta`` and registration, local BEIR tasks, ``mteb run``.

- :class:`O1EmbedderEncoderWrapper` is mteb's ``SentenceTransformerEncoderWrapper`` with an ``encode`` that
  routes queries (``PromptType.query``) to ``encode_query`` (think, then embed) and everything else to
  ``encode_document`` (embed directly), with the thinking settings as constructor options.
- :func:`o1_model_meta` describes a saved o1-embedder model (a local folder, a hub id found in the local
  Hugging Face cache, or ``"o1-embedder"``, the embedded default) as an ``mteb.ModelMeta`` read from its
  files, without loading the weights. :func:`register` / :func:`register_model` put it into mteb's
  in-process model registry, so ``mteb.get_model(meta.name)`` and ``mteb.evaluate(meta, tasks)`` work.
- :func:`beir_task` turns any BEIR folder (validated by :func:`o1_embedder.data.load_beir`) into an mteb
  retrieval task, so ``mteb.evaluate`` runs offline on local data.
- :func:`run_mteb_cli` registers the model given with ``-m`` (and the ``--beir-task`` folders) and runs
  mteb's own command line (``mteb run ...``) in the same process. ``mteb run -m NAME`` only looks models up in
  mteb's registry, and ``-t NAME`` only finds tasks in mteb's task registry: a plain ``mteb`` process cannot
  see either, hence this entry point.

Result files: mteb stores results under ``{output}/results/{name with / -> __}/{revision}/{task}.json``. The
revision of a local folder is a content hash of its files, so a retrained model never overwrites (or, with
mteb's default ``only-missing`` strategy, silently reuses) the results of the previous one. Thinking options
passed to the loader (``think``, ``num_thoughts``, ...) become mteb *experiment kwargs* and results go to
``.../{revision}/experiments/{think_False__...}/{task}.json``, apart from the model's default settings.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import struct
import sys
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, get_args

from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper
from mteb.models.abs_encoder import get_prompt
from mteb.timing import TimingStack
from mteb.types import Licenses, PromptType

from ..data.beir import BeirDataset, load_beir

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch.utils.data import DataLoader

__all__ = [
    "DEFAULT_MODEL_META_NAME",
    "LocalBeirRetrieval",
    "O1EmbedderEncoderWrapper",
    "WRAPPER_OPTIONS",
    "beir_task",
    "beir_task_class",
    "folder_revision",
    "main",
    "o1_model_meta",
    "register",
    "register_model",
    "registered",
    "run_mteb_cli",
    "unregister",
]

logger = logging.getLogger(__name__)

#: Options of :class:`O1EmbedderEncoderWrapper` that a ``ModelMeta`` can carry (``o1_model_meta(..., **options)``).
WRAPPER_OPTIONS = ("think", "num_thoughts", "max_new_tokens", "do_sample", "temperature", "top_p", "seed",
                   "use_thought_cache", "batch_size", "query_batch_size", "model_kwargs")
_GENERATION_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed")

#: ``ModelMeta.name`` of the embedded default (``"o1-embedder"`` when no folder of that name exists).
DEFAULT_MODEL_META_NAME = "o1-embedder/default-SmolLM2-135M-Instruct"
_DEFAULT_BACKBONE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_LOCAL_ORG = "local"
_SMALL_FILE = 1 << 20          # files up to 1 MiB are hashed whole
_SAMPLES, _SAMPLE_BYTES = 256, 4096


# ------------------------------------------------------------------------------------------------ wrapper
def _torch_device(device: str | int | None) -> str | None:
    """mteb's ``run --device`` is an integer GPU index; everything else passes through."""
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        return f"cuda:{int(device)}"
    return device


class O1EmbedderEncoderWrapper(SentenceTransformerEncoderWrapper):
    """mteb encoder for o1-embedder models: queries think, documents don't.

    ``encode(..., prompt_type=PromptType.query)`` calls ``model.encode_query(texts, think=self.think)``;
    ``PromptType.document`` and ``None`` (symmetric tasks: STS, clustering, classification) call
    ``model.encode_document``, which never thinks. mteb's ``encode_kwargs`` (``batch_size``,
    ``show_progress_bar``, ``precision``) are passed through to Sentence-Transformers.

    Args:
        model: a loaded o1-embedder ``SentenceTransformer``, or a model folder / hub id / ``"o1-embedder"``
            (loaded with :func:`o1_embedder.load_model`). As an mteb loader this is ``ModelMeta.name`` and the
            folder comes in ``model_path``.
        revision: the revision mteb records (``ModelMeta.revision``).
        device: torch device; an int (mteb ``run --device 0``) means that CUDA device.
        model_prompts: mteb prompts; default: the model's own (``{"query": "", "document": ""}``).
        model_path: folder to load when ``model`` is a name (set by :func:`o1_model_meta`).
        think: whether queries think (default: the model's ``think`` setting).
        num_thoughts, max_new_tokens, do_sample, temperature, top_p, seed: thinking settings applied with
            ``O1Embedder.configure`` (default: the model's saved settings).
        use_thought_cache: look thoughts up in / store them to the thought cache (default: as saved).
        batch_size: overrides mteb's ``encode_kwargs["batch_size"]`` for queries and documents.
        query_batch_size: overrides the batch size for queries only (thinking holds a KV cache per query).
        model_kwargs: passed to the backbone's ``from_pretrained`` (e.g. ``{"dtype": "bfloat16"}``).
        **kwargs: passed to ``SentenceTransformer`` when loading.
    """

    mteb_model_meta: ModelMeta

    def __init__(self, model: str | os.PathLike | SentenceTransformer, revision: str | None = None,
                 device: str | int | None = None, model_prompts: dict[str, str] | None = None, *,
                 model_path: str | os.PathLike | None = None, think: bool | None = None,
                 num_thoughts: int | None = None, max_new_tokens: int | None = None, do_sample: bool | None = None,
                 temperature: float | None = None, top_p: float | None = None, seed: int | None = None,
                 use_thought_cache: bool | None = None, batch_size: int | None = None,
                 query_batch_size: int | None = None, model_kwargs: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        from o1_embedder.model import O1Embedder, load_model

        source = model_path if model_path is not None else model
        if isinstance(source, (str, os.PathLike)):
            load_kwargs = dict(kwargs)
            if model_kwargs:
                load_kwargs["model_kwargs"] = dict(model_kwargs)
            st_model = load_model(str(source), device=_torch_device(device), **load_kwargs)
        else:
            st_model = source
            if device is not None:
                st_model.to(_torch_device(device))
        module = st_model[0]
        if not isinstance(module, O1Embedder):
            raise TypeError(f"{source!r} is not an o1-embedder model: its first module is {type(module).__name__}")
        for name, value in (("batch_size", batch_size), ("query_batch_size", query_batch_size),
                            ("num_thoughts", num_thoughts), ("max_new_tokens", max_new_tokens)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        generation = {k: v for k, v in zip(_GENERATION_OPTIONS, (max_new_tokens, do_sample, temperature, top_p, seed))
                      if v is not None}
        module.configure(num_thoughts=num_thoughts, **generation)
        if use_thought_cache is not None:
            module.use_thought_cache = bool(use_thought_cache)
        self.think = module.think if think is None else bool(think)
        self.batch_size = batch_size
        self.query_batch_size = query_batch_size

        with warnings.catch_warnings():  # mteb's generic metadata extraction warns about deprecated ST/mteb names
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            super().__init__(st_model, revision=revision, model_prompts=model_prompts)

        options = {k: v for k, v in (("think", think), ("num_thoughts", num_thoughts), *generation.items(),
                                     ("use_thought_cache", use_thought_cache), ("batch_size", batch_size),
                                     ("query_batch_size", query_batch_size), ("model_kwargs", model_kwargs or None))
                   if v is not None}
        if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            self.mteb_model_meta = o1_model_meta(source, revision=revision, **options)
        else:  # in memory (or loaded from the hub by id): describe the loaded weights
            self.mteb_model_meta = _meta_from_loaded(st_model, revision=revision, options=options)

    @property
    def module(self):
        """The ``O1Embedder`` module (its ``stats`` count generated thoughts and tokens)."""
        return self.model[0]

    def encode(self, inputs: DataLoader, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any):
        features = getattr(inputs.dataset, "features", None) or {}
        other = [m for m in ("image", "audio", "video") if m in features]
        if other:
            raise ValueError(f"o1-embedder models embed text only; task {task_metadata.name} has {other} inputs")
        texts = [text for batch in inputs for text in batch["text"]]
        prompt = get_prompt(self.model_prompts, task_metadata, prompt_type)
        kwargs = dict(kwargs)
        if self.batch_size is not None:
            kwargs["batch_size"] = self.batch_size
        if prompt_type == PromptType.query:
            if self.query_batch_size is not None:
                kwargs["batch_size"] = self.query_batch_size
            return self.model.encode_query(texts, prompt=prompt, think=self.think, **kwargs)
        return self.model.encode_document(texts, prompt=prompt, **kwargs)


# ----------------------------------------------------------------------------------------- model metadata
def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


def _safetensors_header(path: Path) -> tuple[bytes, dict[str, Any]]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header length {length})")
        header = f.read(length)
    try:
        return header, json.loads(header)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt safetensors header ({e})") from None


def _hash_file(digest, path: Path) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        if size <= _SMALL_FILE:
            digest.update(f.read())
            return
        if path.suffix == ".safetensors":
            header, _ = _safetensors_header(path)
            digest.update(header)
        for i in range(_SAMPLES):  # evenly spaced blocks, first and last included
            f.seek((size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
            digest.update(f.read(_SAMPLE_BYTES))


def folder_revision(path: str | os.PathLike) -> str:
    """A 16-hex revision for a model folder: a hash of every file except ``README.md`` (whole for files up to
    1 MiB; for larger ones the size, the safetensors header and 256 evenly spaced 4 KiB blocks).

    Changes whenever configs, tokenizer, thinking settings or (trained) weights change; it is a content hash,
    not a git commit.
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


def _weights_summary(folder: Path, config: dict[str, Any]) -> tuple[int, int | None]:
    """(number of parameters, number of input-embedding parameters) from the safetensors headers."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    total, embedding = 0, None
    vocab = _text_config(config).get("vocab_size")
    for file in files:
        _, header = _safetensors_header(file)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            total += count
            shape = info["shape"]
            if embedding is None and name.endswith("embed_tokens.weight") and len(shape) == 2 \
                    and (vocab is None or shape[0] == vocab):
                embedding = count
    if embedding is None and vocab and _text_config(config).get("hidden_size"):
        embedding = int(vocab) * int(_text_config(config)["hidden_size"])  # mteb's own heuristic
    return total, embedding


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("text_config") or config


def _card_metadata(folder: Path) -> dict[str, Any]:
    """license / base_model / language from the model card's YAML header, when present and valid."""
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
    language = card.get("language")
    if language:
        try:
            from mteb.languages.iso_mappings import _hf_langs_to_iso_lang_scripts

            langs = _hf_langs_to_iso_lang_scripts([language] if isinstance(language, str) else list(language))
            if langs:
                found["languages"] = list(langs)
        except Exception:  # private mteb helper; languages are optional
            pass
    return found


def _resolve_model_folder(path_or_name: str | os.PathLike, revision: str | None
                          ) -> tuple[Path, dict[str, Any]]:
    """The local folder of a model, and metadata implied by where it came from."""
    from o1_embedder.model.loading import DEFAULT_MODEL_NAME

    text = os.fspath(path_or_name)
    if os.path.isdir(text):
        return Path(text).resolve(), {}
    if text == DEFAULT_MODEL_NAME:
        from o1_embedder.model import materialize_default
        from o1_embedder.generation.cache import default_cache_dir

        from o1_embedder import __version__

        folder = default_cache_dir() / "models" / f"o1-embedder-default-{__version__}"
        if not (folder / "o1_embedder_config.json").is_file():
            materialize_default(folder)
        return folder, {"name": DEFAULT_MODEL_META_NAME, "license": "apache-2.0", "open_weights": True,
                        "adapted_from": _DEFAULT_BACKBONE_HUB_ID, "languages": ["eng-Latn"]}
    if text.count("/") == 1 and not text.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(text, revision=revision))
        except Exception as e:
            raise FileNotFoundError(f"{text!r} is neither a local folder nor a model found on the Hugging Face Hub "
                                    f"or in its local cache: {e}") from None
        return folder, {"name": text, "revision": folder.name, "open_weights": True}
    raise FileNotFoundError(f"Model folder not found: {text}")


def o1_model_meta(path_or_name: str | os.PathLike, *, name: str | None = None, revision: str | None = None,
                  release_date: str | None = None, license: str | None = None, open_weights: bool | None = None,
                  languages: Sequence[str] | None = None, reference: str | None = None,
                  adapted_from: str | None = None, training_datasets: set[str] | None = None,
                  public_training_code: str | None = None, public_training_data: str | bool | None = None,
                  citation: str | None = None, **options: Any) -> ModelMeta:
    """``mteb.ModelMeta`` of a saved o1-embedder model, read from its files (the weights are not loaded).

    Args:
        path_or_name: a model folder; a hub id (``org/name``) resolved through the Hugging Face cache (offline
            with ``HF_HUB_OFFLINE=1``); or ``"o1-embedder"``: the embedded default, materialised once under
            the o1-embedder cache folder.
        name: ``ModelMeta.name`` (``org/model``). Default: the hub id, ``o1-embedder/default-...`` for the
            default, else ``local/{folder name}``.
        revision: default: the hub commit, else :func:`folder_revision` (a content hash of the folder).
        release_date, license, open_weights, languages, reference, adapted_from, training_datasets,
        public_training_code, public_training_data, citation: ``ModelMeta`` fields. Unknown ones stay
            ``None``; ``license``, ``adapted_from`` (``base_model``) and ``languages`` are read from the model
            card header when present there.
        **options: loader options, see :class:`O1EmbedderEncoderWrapper` (``think``, ``num_thoughts``,
            ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``seed``, ``use_thought_cache``,
            ``batch_size``, ``query_batch_size``, ``model_kwargs``). They are also recorded as mteb
            experiment kwargs, so results with other thinking settings are stored apart.

    Other fields: ``n_parameters`` (all tensors of the safetensors files), ``n_embedding_parameters`` (the
    input embedding), ``memory_usage_mb`` (float32 unless ``model_kwargs`` sets a dtype), ``max_tokens`` (the
    document truncation, ``max_document_tokens``), ``embed_dim`` (hidden size), cosine similarity,
    ``framework=["Sentence Transformers", "PyTorch"]``, ``use_instructions=False`` (the query template is
    fixed by the model, not a task instruction), ``model_type=["dense"]``.
    """
    from o1_embedder.model.module import CONFIG_FILE, check_model_folder

    unknown = sorted(set(options) - set(WRAPPER_OPTIONS))
    if unknown:
        raise TypeError(f"o1_model_meta() got unknown option(s) {unknown}; known: {', '.join(WRAPPER_OPTIONS)}")
    options = {k: v for k, v in options.items() if v is not None}
    folder, implied = _resolve_model_folder(path_or_name, revision)
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{folder} is not an o1-embedder model folder: {CONFIG_FILE} is missing")
    check_model_folder(str(folder))
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"Model folder {folder} is missing: modules.json")
    config = _read_json(folder / "config.json")
    o1_config = _read_json(folder / CONFIG_FILE)
    n_parameters, n_embedding = _weights_summary(folder, config)
    dtype = str((options.get("model_kwargs") or {}).get("dtype", "float32")).replace("torch.", "")
    bytes_per_parameter = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}.get(dtype, 4)
    card = _card_metadata(folder)

    fields: dict[str, Any] = {
        "license": license or implied.get("license") or card.get("license"),
        "open_weights": open_weights if open_weights is not None else implied.get("open_weights"),
        "adapted_from": adapted_from or implied.get("adapted_from") or card.get("adapted_from"),
        "languages": list(languages) if languages else implied.get("languages") or card.get("languages"),
    }
    meta_name = name or implied.get("name") or f"{_LOCAL_ORG}/{folder.name}"
    return ModelMeta(
        loader=O1EmbedderEncoderWrapper,
        loader_kwargs={"model_path": str(folder), **options},
        name=meta_name,
        revision=revision or implied.get("revision") or folder_revision(folder),
        release_date=release_date,
        n_parameters=n_parameters,
        n_embedding_parameters=n_embedding,
        memory_usage_mb=round(n_parameters * bytes_per_parameter / 2**20, 1),
        max_tokens=o1_config.get("max_document_tokens"),
        embed_dim=_text_config(config).get("hidden_size"),
        reference=reference,
        similarity_fn_name="cosine",
        framework=["Sentence Transformers", "PyTorch"],
        use_instructions=False,
        training_datasets=training_datasets,
        public_training_code=public_training_code,
        public_training_data=public_training_data,
        citation=citation,
        modalities=["text"],
        model_type=["dense"],
        experiment_kwargs=options or None,
        **fields,
    )


def _meta_from_loaded(model: SentenceTransformer, *, revision: str | None, options: dict[str, Any]) -> ModelMeta:
    """``ModelMeta`` of an in-memory model: revision from the weights fingerprint and module config."""
    module = model[0]
    config = json.dumps(module.get_config_dict(), sort_keys=True, default=str)
    card_name = getattr(getattr(model, "model_card_data", None), "model_name", None)
    name = card_name if card_name and "/" in card_name else f"{_LOCAL_ORG}/o1-embedder-in-memory"
    n_parameters = sum(p.numel() for p in module.model.parameters())
    embedding = module.model.get_input_embeddings()
    return ModelMeta(
        loader=None, name=name,
        revision=revision or hashlib.sha256(f"{module.fingerprint()}\n{config}".encode()).hexdigest()[:16],
        release_date=None, languages=None, n_parameters=n_parameters,
        n_embedding_parameters=int(embedding.weight.numel()) if embedding is not None else None,
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in module.model.parameters()) / 2**20, 1),
        max_tokens=module.max_document_tokens, embed_dim=module.get_embedding_dimension(), license=None,
        open_weights=None, public_training_code=None, public_training_data=None,
        framework=["Sentence Transformers", "PyTorch"], similarity_fn_name="cosine", use_instructions=False,
        training_datasets=None, modalities=["text"], model_type=["dense"], experiment_kwargs=options or None,
    )


# ----------------------------------------------------------------------------------------------- registry
def _model_registry() -> dict[str, ModelMeta]:
    from mteb.models.model_implementations import MODEL_REGISTRY

    return MODEL_REGISTRY


def _is_ours(meta: ModelMeta | None) -> bool:
    return meta is not None and meta.loader is O1EmbedderEncoderWrapper


def register(meta: ModelMeta) -> ModelMeta:
    """Put ``meta`` into mteb's in-process model registry: ``mteb.get_model(meta.name)`` then loads it.

    Replaces an earlier o1-embedder registration of the same name; refuses to shadow one of mteb's own models.
    """
    if meta.name is None:
        raise ValueError("ModelMeta.name is required for registration")
    if meta.loader is None:
        raise ValueError(f"{meta.name}: ModelMeta has no loader; build it with o1_model_meta()")
    registry = _model_registry()
    existing = registry.get(meta.name)
    if existing is not None and not _is_ours(existing):
        raise ValueError(f"{meta.name!r} is one of mteb's own models; choose another name")
    registry[meta.name] = meta
    return meta


def unregister(name: str) -> ModelMeta | None:
    """Remove an o1-embedder registration (mteb's own models are left alone); returns what was removed."""
    registry = _model_registry()
    if _is_ours(registry.get(name)):
        return registry.pop(name)
    return None


def register_model(path_or_name: str | os.PathLike, **kwargs: Any) -> ModelMeta:
    """``register(o1_model_meta(path_or_name, **kwargs))``: returns the meta; use ``meta.name`` with mteb."""
    return register(o1_model_meta(path_or_name, **kwargs))


# ------------------------------------------------------------------------------------------ local tasks
class LocalBeirRetrieval(AbsTaskRetrieval):
    """Base class of retrieval tasks read from a local BEIR folder; :func:`beir_task_class` makes one per folder.

    Like mteb's own BEIR tasks it evaluates one split, keeps only the queries with at least one relevant
    judgment (grade > 0; judgments with grade 0 stay in the qrels) and embeds documents as ``"title text"``.
    """

    beir_path: Path
    beir_split: str = "test"
    _beir_data: BeirDataset | None = None  # the copy validated at class creation, handed to the first load

    def load_data(self, num_proc: int | None = None, *, timer: TimingStack | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        from datasets import Dataset

        timer = timer or TimingStack()
        cls = type(self)
        with timer("Data loading", log_message=f"Loading local BEIR folder {cls.beir_path} ({cls.beir_split})..."):
            data = cls._beir_data or load_beir(cls.beir_path, split=cls.beir_split, name=self.metadata.name)
            cls._beir_data = None
            query_ids = data.judged_queries()
            corpus = Dataset.from_dict({"id": list(data.corpus),
                                        "title": [d.get("title") or "" for d in data.corpus.values()],
                                        "text": [d.get("text") or "" for d in data.corpus.values()]})
            queries = Dataset.from_dict({"id": query_ids, "text": [data.queries[q] for q in query_ids]})
            qrels = {qid: {doc: int(grade) for doc, grade in data.qrels[qid].items()} for qid in query_ids}
            self.dataset = {"default": {cls.beir_split: {"corpus": corpus, "queries": queries,
                                                         "relevant_docs": qrels, "top_ranked": None}}}
        with timer("Dataset transform"):
            self.dataset_transform(num_proc=num_proc)
        self.data_loaded = True


def _beir_revision(path: Path, split: str) -> str:
    digest = hashlib.sha256()
    for file in (path / "corpus.jsonl", path / "queries.jsonl", path / "qrels" / f"{split}.tsv"):
        digest.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def beir_task_class(path: str | os.PathLike, name: str | None = None, split: str = "test", *,
                    languages: Sequence[str] = ("eng-Latn",), description: str | None = None
                    ) -> type[LocalBeirRetrieval]:
    """A retrieval task class (instantiable without arguments, as mteb's task registry needs) for a BEIR folder.

    The folder is loaded and validated now with :func:`o1_embedder.data.load_beir` (errors name the file and
    line). ``name`` defaults to the folder name; ``languages`` are mteb language-script codes (the task's
    ``eval_langs``; BEIR folders don't say, so English is assumed unless given). The task's dataset revision
    is a content hash of ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{split}.tsv``.
    """
    root = Path(path).resolve()
    data = load_beir(root, split=split, name=name)
    if not data.judged_queries():
        raise ValueError(f"{root / 'qrels' / (split + '.tsv')}: no query has a relevant judgment (grade > 0); "
                         f"nothing to evaluate")
    task_name = name or data.name
    judged = len(data.judged_queries())
    metadata = TaskMetadata(
        name=task_name,
        dataset={"path": str(root), "revision": _beir_revision(root, split)},
        description=description or (f"Local BEIR-format collection {root} ({split} split: {len(data.corpus)} "
                                    f"documents, {judged} queries with relevant judgments)."),
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=list(languages),
        main_score="ndcg_at_10",
        dialect=[],
        bibtex_citation="",
    )
    class_name = "LocalBeir_" + "".join(c if c.isalnum() else "_" for c in task_name)
    return type(class_name, (LocalBeirRetrieval,), {
        "metadata": metadata, "beir_path": root, "beir_split": split, "_beir_data": data,
        "__module__": __name__, "__doc__": metadata.description})


def beir_task(path: str | os.PathLike, name: str | None = None, split: str = "test", **kwargs: Any
              ) -> LocalBeirRetrieval:
    """An mteb retrieval task instance for a BEIR folder (see :func:`beir_task_class`), for ``mteb.evaluate``."""
    return beir_task_class(path, name, split, **kwargs)()


def _task_registry() -> dict[str, type]:
    return importlib.import_module("mteb.get_tasks")._TASKS_REGISTRY


@contextmanager
def registered(models: Sequence[ModelMeta] = (), tasks: Sequence[type[LocalBeirRetrieval]] = ()) -> Iterator[None]:
    """Register models (mteb's model registry) and local task classes (mteb's task registry, so that
    ``mteb.get_task(name)`` and ``mteb run -t name`` find them) for the duration of a ``with`` block."""
    model_registry, task_registry = _model_registry(), _task_registry()
    saved_models = {m.name: model_registry.get(m.name) for m in models}
    saved_tasks = {t.metadata.name: task_registry.get(t.metadata.name) for t in tasks}
    for task in tasks:
        existing = task_registry.get(task.metadata.name)
        if existing is not None and not issubclass(existing, LocalBeirRetrieval):
            raise ValueError(f"Task name {task.metadata.name!r} is one of mteb's own tasks; give the local task "
                             f"another name (NAME=PATH)")
    try:
        for meta in models:
            register(meta)
        for task in tasks:
            task_registry[task.metadata.name] = task
        yield
    finally:
        for key, old in saved_models.items():
            if old is None:
                model_registry.pop(key, None)
            else:
                model_registry[key] = old
        for key, old in saved_tasks.items():
            if old is None:
                task_registry.pop(key, None)
            else:
                task_registry[key] = old


# ------------------------------------------------------------------------------------------------- CLI
_MODEL_COMMANDS = ("run", "mock-run")


def _o1_options_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="o1-embedder mteb options", add_help=False, allow_abbrev=False)
    parser.add_argument("-m", "--model")
    parser.add_argument("--model-name")
    parser.add_argument("--beir-task", action="append", default=[])
    parser.add_argument("--beir-split", default="test")
    parser.add_argument("--beir-language", action="append", default=None)
    parser.add_argument("--think", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--num-thoughts", type=int)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--thought-cache", dest="use_thought_cache", action=argparse.BooleanOptionalAction,
                        default=None)
    parser.add_argument("--query-batch-size", type=int)
    return parser


CLI_HELP = """\
o1-embedder options (before or after mteb's own; with `run` and `mock-run`):
  -m, --model PATH         o1-embedder model folder, hub id (from the local HF cache) or "o1-embedder"
                           (a name already in mteb's registry is passed through unchanged)
  --model-name ORG/NAME    name recorded in the results (default: local/<folder name>)
  --beir-task [NAME=]PATH  a local BEIR folder as a retrieval task (repeatable; default name: folder name)
  --beir-split SPLIT       qrels split of the --beir-task folders (default: test)
  --beir-language CODE     mteb language code of the --beir-task folders (repeatable; default: eng-Latn)
  --think / --no-think     queries think, or embed without a thought (default: as saved in the model)
  --num-thoughts K, --max-new-tokens N, --do-sample / --no-do-sample, --temperature T, --top-p P, --seed S
  --thought-cache / --no-thought-cache
  --query-batch-size B     batch size for queries (mteb's --batch-size applies to both sides otherwise)
"""


def _split_task_spec(spec: str) -> tuple[str | None, str]:
    if os.path.isdir(spec) or "=" not in spec:
        return None, spec
    name, path = spec.split("=", 1)
    return name or None, path


def run_mteb_cli(argv: Sequence[str]) -> int:
    """Run mteb's command line in-process, with an o1-embedder model and local BEIR folders registered.

    ``argv`` is what follows ``mteb`` on a command line, e.g.
    ``["run", "-m", "/path/model", "--beir-task", "/data/cranfield", "--output-folder", "results"]``.
    For ``run`` and ``mock-run`` the o1-embedder options (see ``CLI_HELP``) are taken out first; the rest
    is parsed by mteb's own parser (``mteb.cli.build_cli``). The model is registered under its ``ModelMeta``
    name and ``--beir-task`` folders are added to ``-t``; both registrations are undone when the command ends.
    Other subcommands (``available-tasks``, ...) go to mteb unchanged. Returns 0 on success, argparse's status
    for bad arguments, 2 (with a message on stderr) when the model or a BEIR folder cannot be used; errors
    raised while mteb evaluates propagate.
    """
    from mteb.cli.build_cli import build_cli

    argv = list(argv)
    parser = build_cli()
    if any(a in ("-h", "--help") for a in argv):
        if argv and argv[0] in _MODEL_COMMANDS:
            print(CLI_HELP)
    if not argv or argv[0] not in _MODEL_COMMANDS:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            return _exit_code(e)
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        args.func(args)
        return 0

    try:
        ours, rest = _o1_options_parser().parse_known_args(argv)
        if ours.model is not None:  # mteb's parser sees -m too (mock-run requires it); replaced by the meta name
            rest += ["--model", ours.model]
        args = parser.parse_args(rest)
    except SystemExit as e:
        return _exit_code(e)
    options = {k: getattr(ours, k) for k in ("think", "num_thoughts", "max_new_tokens", "do_sample", "temperature",
                                             "top_p", "seed", "use_thought_cache", "query_batch_size")
               if getattr(ours, k) is not None}
    try:
        models, tasks = [], []
        if ours.model is None:
            raise ValueError("-m/--model is required")
        if not os.path.isdir(ours.model) and ours.model in _model_registry() \
                and not _is_ours(_model_registry()[ours.model]):
            if options or ours.model_name:
                raise ValueError(f"{ours.model!r} is one of mteb's own models: o1-embedder options don't apply")
            args.model = ours.model  # e.g. a baseline on the same local tasks
        else:
            meta = o1_model_meta(ours.model, name=ours.model_name,
                                 revision=getattr(args, "model_revision", None), **options)
            models.append(meta)
            args.model = meta.name
        if ours.beir_task:
            if not hasattr(args, "tasks"):
                raise ValueError(f"--beir-task does not apply to `{argv[0]}`")
            if getattr(args, "benchmarks", None):
                raise ValueError("--beir-task cannot be combined with -b/--benchmarks (mteb then ignores tasks)")
            for spec in ours.beir_task:
                name, path = _split_task_spec(spec)
                tasks.append(beir_task_class(path, name, ours.beir_split,
                                             languages=tuple(ours.beir_language or ("eng-Latn",))))
            names = [t.metadata.name for t in tasks]
            if len(set(names)) != len(names):
                raise ValueError(f"--beir-task names must be distinct, got {names}; use NAME=PATH")
            args.tasks = list(args.tasks or []) + names
    except (OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        try:
            stack.enter_context(registered(models, tasks))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.func(args)
    return 0


def _exit_code(error: SystemExit) -> int:
    code = error.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: configure logging as ``mteb`` does, then :func:`run_mteb_cli`."""
    try:
        from rich.logging import RichHandler

        handlers = [RichHandler(rich_tracebacks=True)]
    except ImportError:  # rich comes with mteb, but keep the entry point usable without it
        handlers = None
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=handlers)
    return run_mteb_cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
