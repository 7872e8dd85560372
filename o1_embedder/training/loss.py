"""The joint loss: behaviour cloning (thought tokens) + contrastive learning, one forward pass.

Each query+thought sequence goes through the model once; its ``<emb>`` state is the query embedding and
its hidden states at the thought positions give the generation loss (see ``O1Embedder.forward``). The
embedding terms are Sentence-Transformers' own losses computed from those embeddings:
``MultipleNegativesRankingLoss`` (InfoNCE over in-batch passages and hard negatives, gathered across
processes) and ``DistillKLDivLoss`` (KL from the teacher scores); only the thought cross-entropy and the
shared pass are this module's. The model is always called through ``self.model(...)``, so DDP/accelerate
wrappers see every forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss, MultipleNegativesRankingLoss
from sentence_transformers.util import dot_score, pairwise_dot_score
from torch import nn


class JointLoss(nn.Module):
    """Weighted sum of InfoNCE over in-batch passages + hard negatives and thought cross-entropy.

    Args:
        model: the o1-embedder ``SentenceTransformer``.
        temperature: InfoNCE temperature (reference: 0.02).
        contrastive_weight / generation_weight: term weights (reference: 0.8 / 0.2).
        distillation_weight: weight of KL(teacher || student) over each query's own group (positive and its
            hard negatives) when the data has teacher scores, or over every passage of the batch when the labels
            hold a score for each (a teacher table's, see :mod:`o1_embedder.training.teacher_table`); 0 disables
            it. The student's scores use ``temperature``, as in the contrastive term, and the KL is taken as it
            is: Sentence-Transformers' ``DistillKLDivLoss`` multiplies it by ``temperature**2`` (Hinton's
            correction for a hard-label loss at temperature 1), which at 0.02 would leave its gradients 2,500 times
            weaker than InfoNCE's, whose scores are divided by the same temperature; that factor is undone here.
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
        # Embeddings are L2-normalised, so the dot product is the cosine, without re-normalising.
        self.contrastive = MultipleNegativesRankingLoss(model, scale=1.0 / temperature, similarity_fct=dot_score,
                                                        gather_across_devices=cross_device_negatives)
        self.distillation = DistillKLDivLoss(model, similarity_fct=pairwise_dot_score, student_temperature=temperature,
                                             teacher_temperature=teacher_temperature)

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
        check_features(features)
        query = self.model(features[0])
        passages = [self.model(f)["sentence_embedding"] for f in features[1:]]
        losses = self.score(query["sentence_embedding"], passages, labels)
        logits, thought_targets = query["thought_logits"], query["thought_targets"]
        if thought_targets.numel():
            generation = F.cross_entropy(logits.float(), thought_targets)
        else:  # no thought in this batch: a finite zero that keeps the graph connected
            generation = query["sentence_embedding"].sum() * 0.0
        losses["generation"] = self.generation_weight * generation
        return losses

    def score(self, q: torch.Tensor, passages: list[torch.Tensor], labels: torch.Tensor | None
              ) -> dict[str, torch.Tensor]:
        """The embedding terms from query and passage embeddings (``passages``: the positives, then one tensor per
        negative column, the j-th negative of every query)."""
        embeddings = [q, *passages]
        losses = {"contrastive": self.contrastive_weight * self.contrastive.compute_loss_from_embeddings(
            embeddings, labels)}
        if self.distillation_weight > 0 and labels is not None:
            batch, groups = q.shape[0], len(passages)
            # every passage of the batch (a teacher table's labels); for a batch of one row with negatives both
            # layouts are the same list, read as its group
            in_batch = labels.shape == (batch, batch * groups) and not (batch == 1 and groups > 1)
            if labels.shape == (batch, groups) and not in_batch:  # each query's own positive and negatives
                if groups < 2:
                    raise ValueError("distilling each query's own group needs hard negatives (num_negatives > 0): "
                                     "with the positive alone the softmax is constant; or give a teacher table")
                kl = self.distillation.compute_loss_from_embeddings(embeddings, labels.to(q.dtype))
                kl = kl / self.temperature ** 2
            elif in_batch:
                kl = in_batch_kl(q, torch.cat(passages), labels, self.temperature, self.teacher_temperature)
            else:
                raise ValueError(f"teacher scores of shape {tuple(labels.shape)} fit neither each query's group "
                                 f"({batch}, {groups}) nor every passage of the batch ({batch}, {batch * groups})")
            losses["distillation"] = self.distillation_weight * kl
        return losses


def in_batch_kl(queries: torch.Tensor, passages: torch.Tensor, teacher: torch.Tensor, temperature: float,
                teacher_temperature: float) -> torch.Tensor:
    """KL(teacher || student) over every passage, averaged over the queries: the student's scores are the
    dot products at ``temperature``, the teacher's ``teacher`` (queries x passages) at ``teacher_temperature``."""
    student = torch.log_softmax((queries @ passages.T).float() / temperature, dim=1)
    target = torch.log_softmax(teacher.detach().float().to(student.device) / teacher_temperature, dim=1)
    return F.kl_div(student, target, log_target=True, reduction="batchmean")


def check_features(features: list[dict[str, torch.Tensor]]) -> None:
    """The joint loss reads what :class:`~o1_embedder.training.collator.JointCollator` builds; say so otherwise."""
    if len(features) < 2:
        raise ValueError(f"JointLoss needs a query and a positive (and optional negatives), got {len(features)} "
                         f"input column(s)")
    if "labels" not in features[0]:
        raise ValueError("JointLoss needs batches from JointCollator (query + thought sequences with thought "
                         "labels): pass data_collator=JointCollator(model[0]) or use JointTrainer; for a plain "
                         "contrastive loss use a Sentence-Transformers loss such as MultipleNegativesRankingLoss")


def _rows(feature: dict, begin: int, end: int) -> dict:
    """Rows ``begin:end`` of a padded feature group (every tensor is batch-first)."""
    return {k: v[begin:end] if isinstance(v, torch.Tensor) and v.dim() else v for k, v in feature.items()}


class CachedJointLoss(JointLoss):
    """GradCache-style :class:`JointLoss` for large batches on small memory.

    1. every feature group is embedded in mini-batches of ``mini_batch_size`` without gradients (the RNG
       state of each mini-batch is kept); the generation loss value is taken from the same pass;
    2. the embedding terms are computed over the whole batch and back-propagated to the embeddings only;
    3. when the trainer calls ``backward``, each mini-batch is re-encoded with gradients and back-propagated
       with its cached embedding gradient, plus its share of the generation loss.

    Memory then scales with ``mini_batch_size``, not the batch, for the same loss and gradients
    (up to floating-point order). The three steps are written here rather than through Sentence-Transformers'
    ``CachedLossMixin`` because the generation term is back-propagated in the same replay pass as the cached
    embedding gradients and needs the loss's incoming gradient (gradient accumulation scales it), which the
    mixin's replay does not hand to the embedding step; its ``RandContext`` is reused for the RNG replay. Works in
    one process; under DDP, gradients are synchronised on every mini-batch backward (correct, but slower than the
    plain loss).
    """

    def __init__(self, model, mini_batch_size: int = 8, **kwargs):
        super().__init__(model, **kwargs)
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        self.mini_batch_size = mini_batch_size

    def get_config_dict(self) -> dict:
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size}

    def _ranges(self, feature: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
        size = feature["input_ids"].shape[0]
        return [(b, min(b + self.mini_batch_size, size)) for b in range(0, size, self.mini_batch_size)]

    def forward(self, features: list[dict[str, torch.Tensor]], labels: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        from sentence_transformers.base.losses.gradcache import RandContext

        check_features(features)
        thought_tokens = int((features[0]["labels"][:, 1:] != -100).sum()) if "labels" in features[0] else 0
        reps, states, generation = [], [], torch.zeros((), device=features[0]["input_ids"].device)
        with torch.no_grad():
            for index, feature in enumerate(features):
                group, group_states = [], []
                for begin, end in self._ranges(feature):
                    mini = _rows(feature, begin, end)
                    group_states.append(RandContext(*mini.values()))
                    out = self.model(mini)
                    group.append(out["sentence_embedding"].detach())
                    if index == 0 and out["thought_targets"].numel():
                        generation = generation + F.cross_entropy(out["thought_logits"].float(),
                                                                  out["thought_targets"], reduction="sum")
                reps.append(torch.cat(group).requires_grad_())
                states.append(group_states)
        generation = self.generation_weight * generation / max(thought_tokens, 1)
        if not torch.is_grad_enabled():
            return {**self.score(reps[0], reps[1:], labels), "generation": generation}

        with torch.enable_grad():
            embedding_losses = self.score(reps[0], reps[1:], labels)
            total = sum(embedding_losses.values())
            total.backward()
        cache = [r.grad for r in reps]
        values = {k: v.detach() for k, v in embedding_losses.items()}
        # The contrastive value becomes a leaf whose backward hook replays the mini-batches with gradients
        # for every term (embedding terms through the cached gradients, generation directly); the other
        # components are plain values for logging.
        carrier = values["contrastive"].clone().requires_grad_()
        carrier.register_hook(lambda grad_output: self._replay(features, cache, states, thought_tokens, grad_output))
        return {**values, "contrastive": carrier, "generation": generation}

    def _replay(self, features, cache, states, thought_tokens, grad_output) -> None:
        with torch.enable_grad():
            for index, (feature, grad, group_states) in enumerate(zip(features, cache, states)):
                for (begin, end), state in zip(self._ranges(feature), group_states):
                    with state:
                        out = self.model(_rows(feature, begin, end))
                    surrogate = torch.dot(out["sentence_embedding"].flatten(), grad[begin:end].flatten())
                    if index == 0 and out["thought_targets"].numel():
                        surrogate = surrogate + self.generation_weight * F.cross_entropy(
                            out["thought_logits"].float(), out["thought_targets"], reduction="sum") / thought_tokens
                    (surrogate * grad_output).backward()
