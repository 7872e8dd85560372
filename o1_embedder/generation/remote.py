"""Thoughts from an OpenAI-compatible completions server (vLLM, SGLang, llama.cpp, TGI ...).

:class:`CompletionsThoughtWriter` sends each query's prompt as **token ids** (``"prompt": [ids]``, part of the
OpenAI completions API), so the server continues exactly the sequence the local model would: no chat template, no
second BOS, no tokenisation drift. Each thought is one request with the settings of the local path: ``max_tokens``
= ``max_new_tokens``, temperature (0 when greedy), top-p, the row's own seed, and the model's special tokens
(``<emb>`` ...) banned through ``logit_bias``; generation stops at the model's end of sequence. The thought's token
ids come back with vLLM's ``return_tokens_as_token_ids`` (``logprobs.tokens`` as ``"token_id:N"``), exact; a server
that does not send them gives text, tokenised back to ids (without special tokens) for the embedding step, which
equals the server's ids for ordinary text (not always for broken UTF-8 pieces).

Requests run on a small thread pool with one deadline for the whole batch. Faults never hang and are never
retried silently: a connection error, an HTTP error or an answer that is not a completion raises
:class:`GenerationServerError` (``status`` 502), the deadline raises it with ``status`` 504; both name the URL.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from o1_embedder.generation.openai_backend import normalize_base_url
from o1_embedder.generation.settings import GenerationSettings

__all__ = ["CompletionsThoughtWriter", "GenerationServerError"]


class GenerationServerError(RuntimeError):
    """The generation server failed (``status`` 502) or did not answer in time (``status`` 504)."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status

    @property
    def code(self) -> str:
        return "generation_timeout" if self.status == 504 else "generation_server_error"


class CompletionsThoughtWriter:
    """Writes thoughts through ``POST {url}/completions``; see the module docstring.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8001/v1`` (``/v1`` is added when the URL has no path).
        model: the served model name (``None``: the first of ``GET /models``).
        timeout_s: the deadline of one batch of thoughts, all its requests together.
        concurrency: requests in flight at once.
        api_key: sent as ``Authorization: Bearer``.
    """

    def __init__(self, url: str, model: str | None = None, *, timeout_s: float = 60.0, concurrency: int = 16,
                 api_key: str | None = None):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.url = normalize_base_url(url)
        self.timeout_s = float(timeout_s)
        self.api_key = api_key
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="o1-embedder-generation")
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "failed": 0}
        self.model = model or self._first_model()

    def describe(self) -> dict[str, str]:
        """What identifies the thoughts this writer returns (part of the thought cache's key)."""
        return {"url": self.url, "model": self.model}

    # ------------------------------------------------------------------------------------------- HTTP
    def _request(self, method: str, path: str, body: dict | None, timeout: float) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=max(timeout, 1e-3)) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:300].decode("utf-8", "replace")
            raise GenerationServerError(f"generation server {self.url}{path} answered HTTP {err.code}: "
                                        f"{detail}") from None
        except TimeoutError:
            raise GenerationServerError(f"generation server {self.url}{path} did not answer within the "
                                        f"{self.timeout_s:g} s deadline", 504) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError):
                raise GenerationServerError(f"generation server {self.url}{path} did not answer within the "
                                            f"{self.timeout_s:g} s deadline", 504) from None
            raise GenerationServerError(f"generation server {self.url}{path} is unreachable: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise GenerationServerError(f"generation server {self.url}{path} answered something that is not "
                                        f"JSON: {raw[:200]!r}") from None

    def _first_model(self) -> str:
        answer = self._request("GET", "/models", None, self.timeout_s)
        try:
            return str(answer["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise GenerationServerError(f"generation server {self.url}/models lists no model; pass "
                                        "--generation-model") from None

    def _complete(self, prompt_ids: list[int], seed: int, settings: GenerationSettings,
                  suppress_ids: Sequence[int], deadline: float) -> tuple[str, list[int] | None]:
        sampled = settings.do_sample
        body: dict[str, Any] = {"model": self.model, "prompt": list(prompt_ids), "max_tokens": settings.max_new_tokens,
                                "n": 1, "seed": seed, "temperature": settings.temperature if sampled else 0.0,
                                "top_p": settings.top_p if sampled else 1.0, "logprobs": 1,
                                "return_tokens_as_token_ids": True}
        if suppress_ids:
            body["logit_bias"] = {str(i): -100 for i in suppress_ids}
        with self._lock:
            self.stats["requests"] += 1
        answer = self._request("POST", "/completions", body, deadline - time.monotonic())
        try:
            choice = answer["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError):
            choice, text = None, None
        if not isinstance(text, str):
            raise GenerationServerError(f"generation server {self.url}/completions answered without "
                                        f"choices[0].text: {json.dumps(answer)[:200]}")
        return text, _token_ids(choice)

    # ------------------------------------------------------------------------------------------- API
    def write(self, prompts: Sequence[list[int]], seeds: Sequence[int], settings: GenerationSettings,
              suppress_ids: Sequence[int] = ()) -> list[tuple[str, list[int] | None]]:
        """One ``(thought text, its token ids or None)`` per prompt (token ids), in order; raises
        :class:`GenerationServerError`."""
        deadline = time.monotonic() + self.timeout_s
        futures = [self._pool.submit(self._complete, p, s, settings, suppress_ids, deadline)
                   for p, s in zip(prompts, seeds)]
        try:
            return [f.result(timeout=max(deadline - time.monotonic(), 0.0)) for f in futures]
        except FutureTimeout:
            raise GenerationServerError(f"generation server {self.url} did not write {len(futures)} thought(s) "
                                        f"within the {self.timeout_s:g} s deadline", 504) from None
        except GenerationServerError:
            with self._lock:
                self.stats["failed"] += 1
            raise
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _token_ids(choice: dict) -> list[int] | None:
    """The generated token ids from ``logprobs.tokens`` written as ``"token_id:N"`` (vLLM's
    ``return_tokens_as_token_ids``; an end-of-sequence id the server lists is dropped by the caller), else ``None``."""
    tokens = (choice.get("logprobs") or {}).get("tokens") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return None
    try:
        return [int(t.split(":", 1)[1]) for t in tokens]
    except ValueError:
        return None
