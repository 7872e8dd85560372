"""In-process generation with a transformers causal LM (the default, offline backend)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from o1_embedder.generation.backends import Generation, GenerationBackend, GenerationRequest, check_device, float_dtype
from o1_embedder.generation.settings import GenerationSettings, row_seed

__all__ = ["TransformersBackend"]

logger = logging.getLogger(__name__)


class TransformersBackend(GenerationBackend):
    """A causal LM in this process: batched, left-padded, every sample drawn from its own seeded generator.

    Args:
        model: folder or hub id of a causal LM, or a loaded ``PreTrainedModel`` (then pass ``tokenizer``);
            ``o1_embedder.model.default_backbone_path()`` is the embedded default (SmolLM2-135M-Instruct).
        tokenizer: the tokenizer, when ``model`` is a loaded model.
        settings: :class:`GenerationSettings` (max new tokens, sampling or greedy, temperature, top-p).
        batch_size: rows (samples) generated together. Rows are sorted by prompt length to limit padding.
        use_chat_template: ``None`` (default) uses the tokenizer's chat template when it has one, else the
            request's plain prompt; ``True`` requires a template; ``False`` always uses the plain prompt.
        device / dtype: where and in which precision the model runs (default: CPU, the checkpoint's dtype).

    A sample's text depends on its prompt and seed only, not on the batch it is generated in (up to
    floating-point differences of padded batches), because each row samples from its own generator.
    Prompts longer than the model's context minus ``max_new_tokens`` fail with an error (no silent truncation).
    """

    name = "transformers"

    def __init__(self, model: Any = None, *, tokenizer: Any = None, settings: GenerationSettings | None = None,
                 batch_size: int = 8, use_chat_template: bool | None = None, device: str | None = None,
                 dtype: Any = None):
        super().__init__(settings)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_device(device)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if model is None:
            raise ValueError("TransformersBackend needs a model (folder, hub id or loaded model); "
                             "o1_embedder.model.default_backbone_path() is the embedded SmolLM2-135M-Instruct")
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            self.model_name = str(model)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.model_name)
            kwargs = {"dtype": _dtype(dtype)} if dtype is not None else {}
            self.lm = AutoModelForCausalLM.from_pretrained(self.model_name, **kwargs)
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a loaded model")
            self.lm, self.tokenizer = model, tokenizer
            self.model_name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        if device is not None:
            self.lm.to(device)
        self.lm.eval()
        self.batch_size = batch_size
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise ValueError(f"{self.model_name}: the tokenizer has no chat template")
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        self.eos_ids = _eos_ids(self.lm, self.tokenizer)
        if not self.eos_ids:
            raise ValueError(f"{self.model_name}: no eos token; generation could not stop")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.context = getattr(self.lm.config, "max_position_embeddings", None)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model_name, "chat_template": self.use_chat_template}

    # ------------------------------------------------------------------------------------------ prompts
    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """Token ids of a request's prompt: chat template with the generation prompt, or the plain prompt."""
        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(request.plain_prompt, add_special_tokens=True)["input_ids"]

    # --------------------------------------------------------------------------------------- generation
    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        rows: list[tuple[int, int, list[int]]] = []  # (request position, seed, prompt ids)
        pending: dict[int, int] = {}
        results: dict[int, Generation] = {}
        for position, request in enumerate(requests):
            self.check_request(request)
            try:
                ids = self.prompt_ids(request)
            except Exception as err:  # a template that rejects the conversation: that request fails
                results[position] = Generation(error=f"prompt: {type(err).__name__}: {err}")
                continue
            if self.context and len(ids) + self.settings.max_new_tokens > self.context:
                results[position] = Generation(error=f"prompt has {len(ids)} tokens; with max_new_tokens="
                                                     f"{self.settings.max_new_tokens} it exceeds the context "
                                                     f"of {self.context}")
                continue
            results[position] = Generation()
            pending[position] = request.n
            rows += [(position, seed, ids) for seed in (row_seed(request.seed, j) for j in range(request.n))]
        for position in [p for p in results if p not in pending]:
            yield position, results.pop(position)

        rows.sort(key=lambda row: -len(row[2]))
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            try:
                texts, tokens = self._generate_rows([row[2] for row in batch], [row[1] for row in batch])
            except RuntimeError as err:  # out of memory and the like: these requests fail, the run goes on
                logger.warning("generation failed for a batch of %d rows: %s", len(batch), err)
                texts, tokens = None, [0] * len(batch)
                error = f"{type(err).__name__}: {err}"
            for i, (position, _, _) in enumerate(batch):
                generation = results[position]
                if texts is None:
                    generation.error = error
                else:
                    generation.texts.append(texts[i])
                generation.tokens += tokens[i]
                pending[position] -= 1
                if pending[position] == 0:
                    yield position, results.pop(position)

    @torch.no_grad()
    def _generate_rows(self, prompts: list[list[int]], seeds: list[int]) -> tuple[list[str], list[int]]:
        from o1_embedder.generation import decode

        settings = self.settings
        out = decode(self.lm, prompts, settings=settings, pad_id=self.pad_id, eos_ids=self.eos_ids,
                     row_seeds=seeds if settings.do_sample else None)
        texts = [str(self.tokenizer.decode(ids, skip_special_tokens=True)) for ids in out.token_ids]
        tokens = [len(ids) + int(done) for ids, done in zip(out.token_ids, out.finished)]
        return texts, tokens


def _eos_ids(lm, tokenizer) -> list[int]:
    """End-of-text ids: the generation config's (chat models often list end-of-turn ids there) and the tokenizer's."""
    ids: list[int] = []
    config_eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        for token in (value if isinstance(value, (list, tuple)) else [value]):
            if token is not None and token not in ids:
                ids.append(int(token))
    return ids


def _dtype(dtype):
    if isinstance(dtype, str):
        if dtype == "auto":
            return "auto"
        return float_dtype(dtype)
    return dtype
