"""Text generation backends behind one interface, for thought synthesis.

A backend turns :class:`GenerationRequest` s (chat messages, how many samples, a seed) into
:class:`Generation` s (the sampled texts, or an error). Every backend answers every request exactly
once and keeps the request's position: :meth:`GenerationBackend.generate_iter` yields
``(position, Generation)`` as results complete (possibly out of order), :meth:`GenerationBackend.generate`
returns them in request order. A failed request is a :class:`Generation` with ``error`` set, never an
exception and never an empty text passed off as a result.

Backends:

* :class:`~o1_embedder.generation.transformers_backend.TransformersBackend` (default): a causal LM in this
  process, batched with left padding, its chat template when it has one, every sample seeded on its own
  (so a text does not depend on which other requests share its batch);
* :class:`~o1_embedder.generation.openai_backend.OpenAIBackend`: any OpenAI-compatible server
  (``vllm serve``, SGLang, llama.cpp server, ...), chat or completion endpoint, with a concurrency limit,
  timeouts and retries with exponential backoff;
* :class:`~o1_embedder.generation.vllm_backend.VLLMBackend`: vLLM in this process (optional extra
  ``o1-embedder[vllm]``; needs a CUDA machine).

Use :func:`make_backend` to build one by name.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from o1_embedder.generation.settings import GenerationSettings

__all__ = [
    "BACKENDS",
    "Generation",
    "GenerationBackend",
    "GenerationRequest",
    "check_device",
    "float_dtype",
    "synthesis_settings",
    "make_backend",
    "render_plain",
    "validate_messages",
]

Messages = list[dict[str, str]]


def synthesis_settings(**changes) -> GenerationSettings:
    """The generation settings synthesis starts from (longer, more varied texts than query thoughts):
    256 new tokens, sampled at temperature 0.7, top-p 0.9; ``changes`` override them."""
    return GenerationSettings.from_dict({"max_new_tokens": 256, "do_sample": True, "temperature": 0.7, "top_p": 0.9,
                                         **changes})


@dataclass
class GenerationRequest:
    """``n`` samples for one chat conversation; ``seed`` makes them reproducible where the backend allows."""

    messages: Messages
    n: int = 1
    seed: int = 0
    #: the text sent where no chat template applies (plain models, completion endpoints);
    #: default :func:`render_plain` of ``messages``
    plain_prompt: str | None = None

    def __post_init__(self) -> None:
        validate_messages(self.messages)
        if self.plain_prompt is None:
            self.plain_prompt = render_plain(self.messages)
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@dataclass
class Generation:
    """The answer to one request: ``texts`` (up to ``n``, as generated) or ``error`` (texts may be partial)."""

    texts: list[str] = field(default_factory=list)
    error: str | None = None
    tokens: int = 0  # generated tokens, where the backend reports them

    @property
    def ok(self) -> bool:
        return self.error is None


def validate_messages(messages: Any) -> Messages:
    """Check a chat conversation: a non-empty list of ``{"role": str, "content": str}``."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{i}] must be a dict with string 'role' and 'content', got {message!r:.80}")
    return messages


def render_plain(messages: Messages, answer_prefix: str = "") -> str:
    """A conversation as plain text, for models without a chat template and for completion endpoints.

    Turns are separated by blank lines; each user turn is followed by a new line and ``answer_prefix``,
    and an assistant turn continues right there. The text ends where the next answer starts::

        render_plain([system: "Write a passage.", user: "Query: a", assistant: "text a", user: "Query: b"],
                     answer_prefix="Passage: ")
        ->  "Write a passage.\n\nQuery: a\nPassage: text a\n\nQuery: b\nPassage:"
    """
    validate_messages(messages)
    parts: list[str] = []
    for message in messages:
        content = message["content"].strip()
        if message["role"] == "assistant" and parts and parts[-1].endswith("\n" + answer_prefix.rstrip()):
            parts[-1] = (parts[-1] + " " + content) if answer_prefix.rstrip() else parts[-1] + content
        elif message["role"] == "user":
            parts.append(content + "\n" + answer_prefix.rstrip())
        else:
            parts.append(content)
    return "\n\n".join(parts)


class GenerationBackend(abc.ABC):  # noqa: B024 (either generate or generate_iter is the abstract one)
    """Generates ``n`` texts per request. Subclasses implement :meth:`generate` or :meth:`generate_iter`."""

    #: a short name (``transformers``, ``openai``, ``vllm``)
    name: str = "backend"

    def __init__(self, settings: GenerationSettings | None = None):
        self.settings = settings or synthesis_settings()

    def describe(self) -> dict[str, Any]:
        """What determines the texts (backend, model, sampling), recorded with synthesised records."""
        s = self.settings
        return {"backend": self.name, "max_new_tokens": s.max_new_tokens, "do_sample": s.do_sample,
                "temperature": s.temperature if s.do_sample else 0.0, "top_p": s.top_p}

    def check_request(self, request: GenerationRequest) -> None:
        if not self.settings.do_sample and request.n > 1:
            raise ValueError(f"greedy decoding would give {request.n} identical texts; use n=1 or sampling")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One :class:`Generation` per request, in request order."""
        results: list[Generation | None] = [None] * len(requests)
        for position, generation in self.generate_iter(requests):
            results[position] = generation
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"{type(self).__name__} returned no result for request(s) {missing[:10]}")
        return results  # type: ignore[return-value]

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        """``(position, Generation)`` for each request, as they complete (default: :meth:`generate`, in order)."""
        if type(self).generate is GenerationBackend.generate:
            raise NotImplementedError(f"{type(self).__name__} must implement generate or generate_iter")
        yield from enumerate(self.generate(requests))

    def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release resources (thread pools, models)."""

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BACKENDS = ("transformers", "openai", "vllm")


def make_backend(kind: str = "transformers", *, model: str | None = None, settings: GenerationSettings | None = None,
                 **options: Any) -> GenerationBackend:
    """Build a backend by name.

    * ``transformers``: ``model`` is a folder or hub id of a causal LM (the command line passes the embedded
      SmolLM2-135M-Instruct when none is named); options ``batch_size``, ``device``, ``dtype``, ``use_chat_template``.
    * ``openai``: options ``base_url`` (required), ``api_key``, ``endpoint`` (``chat`` | ``completion``),
      ``concurrency``, ``timeout``, ``max_retries``, ``backoff``; ``model`` defaults to the server's first model.
    * ``vllm``: ``model`` (required) and any ``vllm.LLM`` keyword arguments.
    """
    if kind == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend(model, settings=settings, **options)
    if kind == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(model=model, settings=settings, **options)
    if kind == "vllm":
        from .vllm_backend import VLLMBackend

        if not model:
            raise ValueError("the vllm backend needs a model (hub id or folder)")
        return VLLMBackend(model, settings=settings, **options)
    raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")


def check_device(device: str | None) -> None:
    """Refuse a device this torch build cannot use, before any model is moved there (torch itself fails with
    an AssertionError deep in a load)."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ({err})") from err
    backend = getattr(torch, kind, None) if kind != "cpu" else None
    if kind != "cpu" and not (backend is not None and hasattr(backend, "is_available") and backend.is_available()):
        raise ValueError(f"device {device!r}: this torch build or machine has no {kind} device")


def float_dtype(name: Any):
    """The floating-point torch dtype a name gives (``float32``, ``float16``, ``bfloat16`` ...), else ValueError."""
    import torch

    value = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must name a floating-point torch dtype such as 'float32', got {name!r}")
    return value
