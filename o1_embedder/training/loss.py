"""The joint loss: behaviour cloning (thought tokens) + contrastive learning (InfoNCE), one forward pass.

Each query+thought sequence goes through the model once; its ``<emb>`` state is the query embedding and
its hidden states at the thought positions give the generation loss (see ``O1Embedder.forward``).
The model is always called through ``self.model(...)``, so DDP/accelerate wrappers see every forward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows (gradient kept for this rank's rows) and the offset of this rank's rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    from sentence_transformers.util.distributed import all_gather_with_grad

    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError("cross-device negatives need the same number of passages on every rank "
                         "(use dataloader_drop_last=True)")
    return all_gather_with_grad(tensor), dist.get_rank() * tensor.shape[0]


class JointLoss(nn.Module):
    """Weighted sum of InfoNCE over in-batch passages + hard negatives and thought cross-entropy.

    Args:
        model: the o1-embedder ``SentenceTransformer``.
        temperature: InfoNCE temperature (reference: 0.02).
        contrastive_weight / generation_weight: term weights (reference: 0.8 / 0.2).
        distillation_weight: weight of KL(teacher || student) over each query's own group when the data
            has teacher scores (0 disables it).
        teacher_temperature: softmax temperature of the teacher scores.
        cross_device_negatives: gather passages from all ranks as extra negatives when distributed.

    Returns a dict of weighted components (``contrastive``, ``generation`` and, if used,
    ``distillation``); the trainer sums them and logs each.
    """

    def __init__(self, model, temperature: float = 0.02, contrastive_weight: float = 0.8,
                 generation_weight: float = 0.2, distillation_weight: float = 0.0, teacher_temperature: float = 1.0,
                 cross_device_negatives: bool = True):
        super().__init__()
        if temperature <= 0 or teacher_temperature <= 0:
            raise ValueError("temperatures must be > 0")
        self.model = model
        self.temperature = temperature
        self.contrastive_weight = contrastive_weight
        self.generation_weight = generation_weight
        self.distillation_weight = distillation_weight
        self.teacher_temperature = teacher_temperature
        self.cross_device_negatives = cross_device_negatives

    @property
    def citation(self) -> str:
        return ("@article{yan2025o1embedder, title={O1 Embedder: Let Retrievers Think Before Action}, "
                "author={Yan, Ruin and Liu, Zheng and Lian, Defu}, journal={arXiv:2502.07555}, year={2025}}")

    def get_config_dict(self) -> dict:
        return {"temperature": self.temperature, "contrastive_weight": self.contrastive_weight,
                "generation_weight": self.generation_weight, "distillation_weight": self.distillation_weight,
                "teacher_temperature": self.teacher_temperature,
                "cross_device_negatives": self.cross_device_negatives}

    def forward(self, features: list[dict[str, torch.Tensor]], labels: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        query = self.model(features[0])
        passages = [self.model(f)["sentence_embedding"] for f in features[1:]]
        q = query["sentence_embedding"]
        batch = q.shape[0]
        positives = passages[0]
        negatives = passages[1] if len(passages) > 1 else positives[:0]
        per_query = negatives.shape[0] // batch if batch else 0
        # Column layout: all positives, then all negatives (row-major per query).
        docs = torch.cat([positives, negatives], dim=0)
        offset = 0
        if self.cross_device_negatives:
            docs, offset = _gather_with_grad(docs)
        scores = q @ docs.T / self.temperature
        # Gathered: docs = [rank 0: pos, neg | rank 1: pos, neg | ...]; this rank's positives start at offset.
        targets = torch.arange(batch, device=q.device) + offset
        contrastive = F.cross_entropy(scores, targets)
        losses = {"contrastive": self.contrastive_weight * contrastive}

        logits, thought_targets = query["thought_logits"], query["thought_targets"]
        if thought_targets.numel():
            generation = F.cross_entropy(logits.float(), thought_targets)
        else:  # no thought in this batch: a finite zero that keeps the graph connected
            generation = q.sum() * 0.0
        losses["generation"] = self.generation_weight * generation

        if self.distillation_weight > 0 and labels is not None:
            group = torch.cat([positives.unsqueeze(1), negatives.view(batch, per_query, -1)], dim=1)
            student = torch.einsum("bh,bgh->bg", q, group) / self.temperature
            teacher = F.softmax(labels.to(student.dtype) / self.teacher_temperature, dim=-1)
            losses["distillation"] = self.distillation_weight * F.kl_div(
                F.log_softmax(student, dim=-1), teacher, reduction="batchmean")
        return losses
