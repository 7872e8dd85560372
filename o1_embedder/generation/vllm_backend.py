"""vLLM in this process (optional: ``pip install 'o1-embedder[vllm]'``, needs a CUDA machine).

A thin wrapper: one ``LLM.chat`` call per batch of requests, one ``SamplingParams`` per request (its
``n`` and seed), outputs matched to requests by position (vLLM returns them in input order; the count
is checked). For a server instead, run ``vllm serve MODEL`` and use the ``openai`` backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from o1_embedder.generation.backends import Generation, GenerationBackend, GenerationRequest
from o1_embedder.generation.settings import GenerationSettings

__all__ = ["VLLMBackend"]


class VLLMBackend(GenerationBackend):
    """Generation with ``vllm.LLM``.

    Args:
        model: hub id or folder, passed to ``vllm.LLM(model=...)``.
        settings: :class:`GenerationSettings`.
        llm: an existing ``vllm.LLM`` (then ``model`` only names it in :meth:`describe`).
        use_chat: ``True`` (default) calls ``LLM.chat`` with the messages (the model's chat template);
            ``False`` calls ``LLM.generate`` with the plain prompts.
        **llm_kwargs: more ``vllm.LLM`` arguments (``tensor_parallel_size``, ``dtype``, ``max_model_len``, ...).
    """

    name = "vllm"

    def __init__(self, model: str, *, settings: GenerationSettings | None = None, llm: Any = None,
                 use_chat: bool = True, **llm_kwargs: Any):
        super().__init__(settings)
        try:
            import vllm
        except ImportError as err:
            raise ModuleNotFoundError("the vllm backend needs vLLM on a CUDA machine: pip install 'o1-embedder[vllm]' "
                                      "(or run 'vllm serve MODEL' and use --backend openai)") from err
        self._vllm = vllm
        self.model_name = model
        self.use_chat = use_chat
        self.llm = llm if llm is not None else vllm.LLM(model=model, **llm_kwargs)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model_name, "chat": self.use_chat}

    def _params(self, request: GenerationRequest):
        temperature = self.settings.temperature if self.settings.do_sample else 0.0
        return self._vllm.SamplingParams(n=request.n, temperature=temperature, top_p=self.settings.top_p,
                                         max_tokens=self.settings.max_new_tokens, seed=request.seed)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        for request in requests:
            self.check_request(request)
        params = [self._params(r) for r in requests]
        try:
            if self.use_chat:
                outputs = self.llm.chat([r.messages for r in requests], sampling_params=params, use_tqdm=False)
            else:
                outputs = self.llm.generate([r.plain_prompt for r in requests], sampling_params=params, use_tqdm=False)
        except (RuntimeError, ValueError) as err:  # the whole batch failed: every request reports it
            return [Generation(error=f"vllm: {type(err).__name__}: {err}") for _ in requests]
        outputs = list(outputs)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        results = []
        for output in outputs:
            completions = list(getattr(output, "outputs", []) or [])
            results.append(Generation(texts=[c.text for c in completions],
                                      tokens=sum(len(getattr(c, "token_ids", ()) or ()) for c in completions)))
        return results
