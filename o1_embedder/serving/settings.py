"""Server settings: one dataclass, the single source of the defaults and of the ``serve`` command's options.

Every field becomes an option of ``o1-embedder serve`` (``batch_window_ms`` -> ``--batch-window-ms``) with its
``help`` text and default; fields marked with an ``env`` variable read it when the option is not given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from o1_embedder.model.overrides import ThinkingOverrides

__all__ = ["API_KEY_ENV", "INPUT_TYPES", "ServeCommand", "ServeSettings"]

API_KEY_ENV = "O1_EMBEDDER_API_KEY"
INPUT_TYPES = ("document", "query")


def _option(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with its command-line help (and optional ``choices``, ``env``, ``secret``)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class ServeSettings(ThinkingOverrides):
    """How ``o1-embedder serve`` listens, batches, limits and shuts down, and the thinking overrides shared with
    ``eval`` and ``think`` (first); ``None`` means "the model's own"."""

    host: str = _option("127.0.0.1", "address to listen on (127.0.0.1: this machine only)")
    port: int = _option(8000, "TCP port")
    api_key: str | None = _option(None, "require 'Authorization: Bearer KEY' on /v1/* (default: "
                                        "$O1_EMBEDDER_API_KEY, else none)", env=API_KEY_ENV, secret=True)
    served_model_name: str | None = _option(None, "the name clients send as 'model' (default: the MODEL argument's "
                                                  "folder name)")
    batch_window_ms: float = _option(10.0, "how long the first waiting text waits for others to join its batch")
    max_batch: int = _option(32, "texts per model call (embedding batches), queries decoding together (thinking)")
    continuous_batching: bool = _option(True, "thinking queries join the running decode at its next step and leave "
                                              "it as they finish",
                                        no_help="decode thinking queries a batch at a time (a query that arrives "
                                                "during a batch waits for its end)")
    max_inputs: int = _option(2048, "inputs per request (OpenAI's own limit, so clients that chunk for it work)")
    max_input_chars: int = _option(32768, "characters per input (texts are also truncated to the model's token "
                                          "limits)")
    max_request_bytes: int = _option(16 * 1024 * 1024, "request body size limit (413 beyond)")
    max_queued: int = _option(8192, "texts waiting for the model, all requests together; beyond, requests are "
                                    "refused with 503 until the queue drains")
    request_timeout_s: float = _option(600.0, "a request not answered within this many seconds gets a 504")
    shutdown_timeout_s: float = _option(30.0, "on shutdown, queued requests are still answered for this long, then "
                                              "refused with 503")
    default_input_type: str = _option("document", "input_type of requests that do not say (see the README: plain "
                                                  "OpenAI clients send documents in bulk, and thinking costs)",
                                      choices=INPUT_TYPES)
    thought_cache: str | None = _option(None, "thought cache file, or 'off' (default: $O1_EMBEDDER_THOUGHT_CACHE, "
                                              "else ~/.cache/o1_embedder/thoughts.sqlite)")
    device: str | None = _option(None, "torch device for the model, e.g. cuda or cpu (default: as loaded)")
    generation_url: str | None = _option(None, "an OpenAI-compatible completions server (vLLM, SGLang, llama.cpp) "
                                               "serving the same weights writes the thoughts; this server only "
                                               "embeds (e.g. http://127.0.0.1:8001/v1)")
    generation_model: str | None = _option(None, "the model name the generation server serves (default: the first "
                                                 "of its /models)")
    generation_timeout_s: float = _option(60.0, "deadline of one batch of thoughts from the generation server "
                                                "(then 504)")
    log_level: str = _option("info", "server log level", choices=("critical", "error", "warning", "info", "debug"))

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("port", "max_batch", "max_inputs", "max_input_chars", "max_request_bytes", "max_queued"):
            _check_number(name, getattr(self, name), int, minimum=1 if name != "port" else 0)
        for name in ("batch_window_ms", "request_timeout_s", "shutdown_timeout_s", "generation_timeout_s"):
            _check_number(name, getattr(self, name), (int, float), minimum=0)
        if self.api_key is not None and (not self.api_key.strip() or self.api_key != self.api_key.strip()):
            raise ValueError("setting 'api_key' must be a non-empty key without surrounding whitespace "
                             "(an empty key would let any 'Authorization: Bearer' header through)")
        for name, limit in (("batch_window_ms", 60_000), ("request_timeout_s", 86_400), ("shutdown_timeout_s", 86_400)):
            if getattr(self, name) > limit:  # beyond threading's largest wait the model thread would fail
                raise ValueError(f"setting {name!r} must be <= {limit}, got {getattr(self, name)}")
        if self.generation_timeout_s <= 0:
            raise ValueError(f"setting 'generation_timeout_s' must be > 0, got {self.generation_timeout_s}")
        if self.generation_url is not None:
            from o1_embedder.generation.openai_backend import normalize_base_url

            try:
                normalize_base_url(self.generation_url)
            except ValueError as err:
                raise ValueError(f"setting 'generation_url': {err}") from None
        elif self.generation_model is not None:
            raise ValueError("setting 'generation_model' needs 'generation_url'")
        if self.port > 65535:
            raise ValueError(f"setting 'port' must be <= 65535, got {self.port}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"setting 'request_timeout_s' must be > 0, got {self.request_timeout_s}")
        if self.max_queued < self.max_inputs:
            raise ValueError(f"setting 'max_queued' ({self.max_queued}) must be >= 'max_inputs' ({self.max_inputs}): "
                             "a request of max_inputs texts must fit in the queue")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"setting {f.name!r} must be one of {list(choices)}, got {getattr(self, f.name)!r}")

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000.0

    def __repr__(self) -> str:
        """The settings without secrets (they end up in logs)."""
        shown = {f.name: ("***" if f.metadata.get("secret") and getattr(self, f.name) else getattr(self, f.name))
                 for f in fields(self)}
        return f"ServeSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def _check_number(name: str, value: Any, kind: type | tuple[type, ...], minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if kind is int else "a number"
        raise TypeError(f"setting {name!r} must be {expected}, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"setting {name!r} must be a finite number, got {value}")
    if value < minimum:
        raise ValueError(f"setting {name!r} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class ServeCommand(ServeSettings):
    """``o1-embedder serve MODEL``: the settings plus the model to serve."""

    model: str = _option(None, "o1-embedder model folder, or 'o1-embedder' for the embedded default",
                         positional=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model is required (a model folder or 'o1-embedder'), got {self.model!r}")
