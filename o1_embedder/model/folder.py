"""What a model folder must be before it loads: its files, weights that match its config and are finite, no code of
its own (only this package's classes are trusted)."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM

__all__ = ["CONFIG_FILE", "check_finite", "check_model_folder", "load_weights", "refuse_custom_code"]

#: the module's settings file in a model folder
CONFIG_FILE = "o1_embedder_config.json"


def load_weights(local: str, model_kwargs: dict):
    """The causal LM of a model folder, exactly as saved: a corrupt weight file is reported with its path; a
    missing, unexpected or mis-shaped tensor (a config that does not match the weights) and a non-finite weight
    are errors naming the folder and the tensors; code shipped in the folder is never run."""
    refuse_custom_code(local)
    try:
        loaded: Any = AutoModelForCausalLM.from_pretrained(local, output_loading_info=True, trust_remote_code=False,
                                                           **model_kwargs)
        model, info = loaded
    except Exception as err:  # safetensors raises its own SafetensorError
        if "safetensor" in str(err).lower() or "header" in str(err).lower() or "deserializ" in str(err).lower():
            raise ValueError(f"{os.path.join(local, 'model.safetensors')}: cannot be read ({err}); the file is "
                             f"corrupt or truncated") from err
        raise
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in (info.get(kind) or []))
        if names:
            problems.append(f"{kind.replace('_keys', '')} weights {names[:8]}"
                            + (f" and {len(names) - 8} more" if len(names) > 8 else ""))
    if problems:
        raise ValueError(f"model folder {local}: its weights do not match its config.json ({'; '.join(problems)}); "
                         f"the folder is damaged or its config was edited")
    check_finite(model, f"model folder {local}")
    return model


def check_finite(model, where: str) -> None:
    """Refuse a model with NaN or infinite weights (they give garbage vectors without any other sign)."""
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ValueError(f"{where}: non-finite (NaN or infinite) values in {bad[:8]}"
                         + (f" and {len(bad) - 8} more tensors" if len(bad) > 8 else ""))


def refuse_custom_code(local: str) -> None:
    """A folder whose config or tokenizer config maps classes to its own code (``auto_map``) is refused: only this
    package's classes are trusted, and transformers would otherwise ask whether to run the folder's code."""
    for name in ("config.json", "tokenizer_config.json"):
        path = os.path.join(local, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if isinstance(data, dict) and data.get("auto_map"):
            raise ValueError(f"{path} maps classes to code in the folder (auto_map: {sorted(data['auto_map'])}); "
                             f"o1-embedder runs no code from a model folder: remove auto_map (and the .py files) "
                             f"to load it with the standard classes")


REQUIRED_FILES = ("config.json", CONFIG_FILE)


def check_model_folder(path: str) -> None:
    """A clear error for a model folder with missing files (instead of a deep transformers traceback)."""
    if not os.path.isdir(path):
        return
    missing = [name for name in REQUIRED_FILES if not os.path.exists(os.path.join(path, name))]
    has_weights = any(name.endswith(".safetensors") or name == "model.safetensors.index.json"
                      for name in os.listdir(path))
    has_tokenizer = any(os.path.exists(os.path.join(path, name)) for name in ("tokenizer.json", "tokenizer.model"))
    if not has_weights:
        missing.append("model.safetensors")
    if not has_tokenizer:
        missing.append("tokenizer.json")
    if missing:
        raise FileNotFoundError(f"Model folder {path} is missing: {', '.join(missing)}")
