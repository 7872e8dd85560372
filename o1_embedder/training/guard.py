"""What training checks so that it never saves a broken model and never resumes into a different run.

* **Collapse**: a learning rate far too high can leave every loss finite while the model's embeddings become
  zero or identical for all texts. :func:`probe` embeds a few distinct training texts before and after
  training; :func:`check_collapse` refuses to save when the vectors are zero, non-finite or nearly the same
  for every text (and were not before), or when the gradient norm stayed at zero.
* **Resume**: the settings a run started with are kept beside its checkpoints (:data:`RUN_FILE`); resuming
  with other settings (learning rate, data file and its content, seed, negatives, ...) is refused.
* **Damaged checkpoints**: :func:`complete_checkpoints` lists the checkpoints whose files all read back;
  a damaged newest one is named and the previous complete one is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict

import torch

__all__ = ["TrainingCollapsedError", "check_collapse", "check_resume", "complete_checkpoints", "probe"]

logger = logging.getLogger(__name__)

RUN_FILE = "train_run.json"
#: settings a resumed run must share with the run it continues (the rest: output paths and switches)
RESUME_KEYS = ("model", "backbone", "lora", "lora_r", "lora_alpha", "lora_dropout", "epochs", "max_steps",
               "learning_rate", "warmup_ratio", "batch_size", "gradient_accumulation_steps", "num_negatives",
               "temperature", "contrastive_weight", "generation_weight", "distillation_weight", "teacher_temperature",
               "thought_dropout", "max_passage_tokens", "max_thought_tokens", "bf16", "seed", "cached_mini_batch_size")


class TrainingCollapsedError(RuntimeError):
    """Training produced a model whose embeddings carry no information; it was not saved."""


# ------------------------------------------------------------------------------------------------ collapse
@torch.no_grad()
def probe(model, texts: list[str]) -> dict[str, float]:
    """Norms and pairwise cosines of the document embeddings of ``texts`` (distinct), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        emb = model.encode_document(texts, convert_to_tensor=True, show_progress_bar=False)
    finally:
        model.train(was_training)
    emb = emb.float()
    norms = emb.norm(dim=-1)
    finite = bool(torch.isfinite(emb).all())
    if not finite or len(texts) < 2:
        return {"finite": float(finite), "min_norm": float(norms.min()) if finite else 0.0, "mean_cosine": 0.0}
    unit = torch.nn.functional.normalize(emb, dim=-1)
    cos = unit @ unit.T
    off = cos[~torch.eye(len(texts), dtype=torch.bool)]
    return {"finite": 1.0, "min_norm": float(norms.min()), "mean_cosine": float(off.mean()),
            "min_cosine": float(off.min())}


def check_collapse(before: dict[str, float], after: dict[str, float], log_history: list[dict],
                   learning_rate: float, output: str) -> None:
    """Raise :class:`TrainingCollapsedError` when ``after`` shows a collapsed model (see the module docstring)."""
    reasons = []
    if not after["finite"]:
        reasons.append("its embeddings hold NaN or infinite values")
    elif after["min_norm"] < 1e-3:
        reasons.append(f"some embeddings are zero vectors (smallest norm {after['min_norm']:.2e})")
    elif after["min_cosine"] > 0.999 and before.get("min_cosine", 0.0) < 0.99:
        reasons.append(f"every text gets nearly the same vector (smallest cosine between different texts "
                       f"{after['min_cosine']:.4f}, {before.get('min_cosine', 0.0):.4f} before training)")
    norms = [h["grad_norm"] for h in log_history if isinstance(h.get("grad_norm"), (int, float))]
    if len(norms) >= 3 and all(n == 0 for n in norms[-3:]):
        reasons.append("the gradient norm stayed at 0 over the last logged steps")
    if reasons:
        raise TrainingCollapsedError(
            f"training collapsed: {'; '.join(reasons)}. The model was not saved and {output} is unchanged; "
            f"the learning rate ({learning_rate:g}) is the usual cause: lower it (the defaults are 1e-4 to 2e-4 "
            f"for LoRA) and train again with --force to start over")


# -------------------------------------------------------------------------------------------------- resume
def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_settings(config) -> dict:
    values = {k: v for k, v in asdict(config).items() if k in RESUME_KEYS}
    values["data_sha256"] = _file_digest(config.data)
    values["teacher_table_sha256"] = _file_digest(config.teacher_table) if config.teacher_table else None
    return json.loads(json.dumps(values))


def check_resume(config, folder: str, checkpoint: str | None) -> None:
    """Refuse what would silently mix two runs in ``folder`` (the checkpoints of ``config.output``):

    * a fresh run (no ``resume``) over earlier checkpoints, unless ``force``;
    * a resumed run whose settings or data differ from those the checkpoints were made with.

    Records the settings when a run starts from the beginning."""
    from o1_embedder.files import atomic_write_text

    current = run_settings(config)
    path = os.path.join(folder, RUN_FILE)
    if checkpoint is None:
        earlier = complete_checkpoints(folder, warn=False) if os.path.isdir(folder) else []
        if earlier and not config.resume and not config.force:
            raise ValueError(f"{folder} holds checkpoints of an earlier run ({os.path.basename(earlier[-1])}): "
                             f"pass --resume to continue it, or --force to start over (they are then replaced)")
        if earlier and config.force:
            import shutil

            shutil.rmtree(folder)
        if os.path.isdir(os.path.dirname(os.path.abspath(folder))):
            atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True) + "\n")
        return
    if not os.path.isfile(path):
        return  # checkpoints of an earlier version: nothing recorded to compare
    try:
        recorded = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable ({err}); resume cannot check the run's settings") from None
    changed = [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in current.items() if recorded.get(k) != v]
    if changed:
        raise ValueError(f"--resume: the checkpoints in {folder} were made with other settings ({'; '.join(changed)}); "
                         f"resuming would mix two runs: restore them, or pass --force without --resume to start over")


# --------------------------------------------------------------------------------------------- checkpoints
def _checkpoint_problem(path: str) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from (naming the file), or ``None``."""
    from safetensors import safe_open

    from o1_embedder.training.trainer import TRAINABLE_FILE

    state = os.path.join(path, "trainer_state.json")
    try:
        with open(state, encoding="utf-8") as handle:
            json.load(handle)
    except (OSError, ValueError) as err:
        return f"{state} is not readable JSON ({err})"
    weights = os.path.join(path, TRAINABLE_FILE)
    try:
        with safe_open(weights, framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    return f"{weights}: {key} holds non-finite values"
    except Exception as err:  # safetensors raises its own error types
        return f"{weights} cannot be read ({err})"
    for name in ("optimizer.pt", "scheduler.pt"):
        file = os.path.join(path, name)
        if os.path.exists(file):
            try:
                torch.load(file, map_location="cpu", weights_only=True)
            except Exception as err:  # a truncated pickle raises several kinds of error
                return f"{file} cannot be read ({type(err).__name__}: {str(err)[:80]})"
    return None


def complete_checkpoints(folder: str, warn: bool = True) -> list[str]:
    """The ``checkpoint-N`` folders whose files all read back, oldest first; each damaged one is named (warning)."""
    if not os.path.isdir(folder):
        return []
    steps = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit() and os.path.isdir(path):
            steps.append((int(name[len("checkpoint-"):]), path))
    complete = []
    for _, path in sorted(steps):
        problem = _checkpoint_problem(path)
        if problem is None:
            complete.append(path)
        elif warn:
            logger.warning("checkpoint %s is damaged and skipped: %s", path, problem)
            print(f"checkpoint {path} is damaged and skipped: {problem}", flush=True)
    return complete
