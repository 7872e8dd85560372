"""``JointTrainer``: ``SentenceTransformerTrainer`` for o1-embedder models.

* **Routing**: with Sentence-Transformers' own collator (any plain loss, e.g. ``MultipleNegativesRankingLoss``),
  a column the ``router_mapping`` does not name is embedded as a query when it comes first (the anchor)
  and as a document otherwise, as at inference; queries never think in training (no-thought format).

* **Checkpoints** hold the trainable parameters only (``trainable.safetensors``: the LoRA matrices and
  special-token rows under LoRA, every weight in full fine-tuning), next to the optimizer, scheduler,
  RNG and trainer state the Hugging Face trainer writes itself. A LoRA-wrapped model cannot be saved as an
  o1-embedder model folder before its adapters are merged, and merging mid-training would end LoRA;
  saving the trained tensors keeps checkpoints small and resumable.
* **Card**: a model saved after training gets Sentence-Transformers' card (training data, losses,
  hyperparameters, logs) with this package's usage (`pip install o1-embedder`, `trust_remote_code=True`).
* **Non-finite loss**: training stops at the first step whose loss is NaN or infinite, with an error that
  names the step and the loss components, instead of training on and saving a poisoned model.
"""

from __future__ import annotations

import math
import os

import torch
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

TRAINABLE_FILE = "trainable.safetensors"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class QueryFirstDataCollator(SentenceTransformerDataCollator):
    """Sentence-Transformers' collator with o1-embedder routing: unless ``router_mapping`` names a column, the
    first column is embedded as a query, the others as documents."""

    def _get_task_for_column(self, column_name: str, column_position: int, router_mapping: dict[str, str]):
        task = super()._get_task_for_column(column_name, column_position, router_mapping)
        if task is None:
            return "query" if column_position == 0 else "document"
        return task


class JointTrainer(SentenceTransformerTrainer):
    """The Sentence-Transformers trainer for o1-embedder models (see the module docstring)."""

    data_collator_class = QueryFirstDataCollator

    def _trainable(self) -> dict[str, torch.Tensor]:
        model = getattr(self.model, "_orig_mod", self.model)
        return {name: param for name, param in model.named_parameters() if param.requires_grad}

    def _save_checkpoint(self, model, trial) -> None:
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as err:  # torch's zip writer says "unexpected pos" when the disk fills
            from o1_embedder.files import disk_full_error, is_disk_full

            if not is_disk_full(err):
                raise
            folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
            raise disk_full_error(err, folder, "checkpoint",
                                  "the earlier checkpoints and model are intact: free space and run again with "
                                  "--resume") from err

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        from safetensors.torch import save_file

        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        tensors = {name: param.detach().cpu().clone() for name, param in self._trainable().items()}  # no shared memory
        tmp = os.path.join(output_dir, f".{TRAINABLE_FILE}.tmp")
        save_file(tensors, tmp)
        os.replace(tmp, os.path.join(output_dir, TRAINABLE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_file

        path = os.path.join(resume_from_checkpoint, TRAINABLE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{resume_from_checkpoint}: no {TRAINABLE_FILE}; not a checkpoint of this trainer")
        saved = load_file(path)
        params = self._trainable()
        missing = sorted(set(params) - set(saved))
        unexpected = sorted(set(saved) - set(params))
        if missing or unexpected:
            raise ValueError(f"{path} does not match the model being trained (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}): resume with the same model and LoRA settings")
        with torch.no_grad():
            for name, param in params.items():
                if saved[name].shape != param.shape:
                    raise ValueError(f"{path}: {name} has shape {tuple(saved[name].shape)}, "
                                     f"the model has {tuple(param.shape)}")
                param.copy_(saved[name].to(param.dtype))

    def _load_best_model(self) -> None:
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        value = float(loss.detach())
        if not math.isfinite(value):
            components = self.accum_loss_components.get("train" if model.training else "eval", {})
            details = ", ".join(f"{k}={float(v):.4g}" for k, v in components.items() if k != "steps")
            raise NonFiniteLossError(
                f"the loss is {value} at step {self.state.global_step + 1}"
                + (f" (accumulated components: {details})" if details else "")
                + ": check the data for non-finite teacher scores, lower the learning rate, or train in float32; "
                  "nothing was saved")
        return result
