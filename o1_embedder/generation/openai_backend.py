"""A client for any OpenAI-compatible server: ``vllm serve``, SGLang, llama.cpp server, TGI, ...

Standard library only (``urllib`` + threads). Requests run on ``concurrency`` daemon threads; each
result is tied to its request's position, so answers that complete out of order never reach the
wrong request. A request is retried with exponential backoff (and ``Retry-After`` when the server
sends it) on connection errors, timeouts, responses that are not JSON and HTTP 408/409/429/5xx; other HTTP
errors fail at once. Servers that ignore ``n`` (llama.cpp returns one choice) are asked again for the
missing samples, with the next seed.

Under faults: :meth:`OpenAIBackend.close` (also on Ctrl-C) stops every retry loop at once and never waits
for requests in flight; after ``max_consecutive_failures`` requests in a row have failed for good, the
server is taken for dead and :class:`ServerUnavailable` ends the run with one message, instead of every
remaining request being retried on its own.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import logging
import os
import queue
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from o1_embedder.generation.backends import Generation, GenerationBackend, GenerationRequest
from o1_embedder.generation.settings import GenerationSettings

__all__ = ["OpenAIBackend", "RequestFailed", "ServerUnavailable", "normalize_base_url"]

logger = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
ENDPOINTS = ("chat", "completion")


class RequestFailed(Exception):
    """A request failed for good (after retries, or with a non-retryable status)."""


class ServerUnavailable(ConnectionError):
    """Too many requests in a row failed for good: the server is down or refuses the work."""


def normalize_base_url(base_url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; a URL with a path is used as given (minus a trailing /)."""
    parsed = urllib.parse.urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"base_url must be an http(s) URL like http://127.0.0.1:8000/v1, got {base_url!r}")
    path = parsed.path.rstrip("/")
    return urllib.parse.urlunparse(parsed._replace(path=path or "/v1")).rstrip("/")


class OpenAIBackend(GenerationBackend):
    """Generation through an OpenAI-compatible HTTP API.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is added when the URL has no path).
        model: the served model name; ``None`` asks ``GET /models`` and takes the first one.
        api_key: sent as ``Authorization: Bearer``; default ``$OPENAI_API_KEY`` when set.
        endpoint: ``chat`` (``/chat/completions`` with the messages; the server applies the chat template)
            or ``completion`` (``/completions`` with the request's plain prompt).
        concurrency: requests in flight at once.
        timeout: seconds per HTTP request (connect and each read).
        max_retries: retries of one HTTP request after the first try.
        backoff / max_backoff: the wait before retry ``k`` is ``min(max_backoff, backoff * 2**k)`` with
            jitter (x0.5 to x1), or the server's ``Retry-After`` when larger.
        extra_body: more JSON fields for every request (e.g. ``{"top_k": 20}`` or ``{"stop": [...]}``).
        max_consecutive_failures: after this many requests in a row failed for good, the run stops with
            :class:`ServerUnavailable` (0: never).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str | None = None, *, settings: GenerationSettings | None = None,
                 api_key: str | None = None, endpoint: str = "chat", concurrency: int = 16, timeout: float = 120.0,
                 max_retries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
                 extra_body: dict[str, Any] | None = None, sleep: Callable[[float], None] | None = None,
                 max_consecutive_failures: int = 8):
        super().__init__(settings)
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_consecutive_failures < 0:
            raise ValueError(f"max_consecutive_failures must be >= 0, got {max_consecutive_failures}")
        self.base_url = normalize_base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.extra_body = dict(extra_body or {})
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # a wait that close() cuts short
        self.max_consecutive_failures = max_consecutive_failures
        self._failures_in_a_row = 0
        self._dead: str | None = None
        self._jobs: queue.SimpleQueue | None = None
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.stats = {"http_requests": 0, "retries": 0}
        self.model = model or self._first_model()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model, "endpoint": self.endpoint}

    # ------------------------------------------------------------------------------------------- HTTP
    def _http(self, method: str, path: str, payload: dict | None = None) -> dict:
        """One HTTP call with retries; the decoded JSON body, or :class:`RequestFailed`."""
        url = self.base_url + path
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise RequestFailed(f"stopped ({last_error or 'the run was interrupted'})")
            retry_after = 0.0
            with self._lock:
                self.stats["http_requests"] += 1
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method=method)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
                try:
                    decoded = json.loads(body.decode("utf-8"))
                    if not isinstance(decoded, dict):
                        raise ValueError("not a JSON object")
                    return decoded
                except (UnicodeDecodeError, ValueError) as err:
                    last_error = f"malformed response from {url}: {err}: {body[:200]!r}"
            except urllib.error.HTTPError as err:
                detail = _error_detail(err)
                last_error = f"HTTP {err.code} from {url}: {detail}"
                if err.code not in RETRY_STATUS:
                    raise RequestFailed(last_error) from None
                retry_after = _retry_after(err.headers.get("Retry-After") if err.headers else None)
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as err:
                reason = getattr(err, "reason", err)
                last_error = f"{type(err).__name__} for {url}: {reason}"
            if attempt < self.max_retries:
                with self._lock:
                    self.stats["retries"] += 1
                wait = min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)
                wait = max(wait, min(retry_after, self.max_backoff))
                asked = (f"; the server asked for {retry_after:g} s (Retry-After), waits are capped at "
                         f"max_backoff={self.max_backoff:g} s" if retry_after > self.max_backoff else "")
                logger.warning("%s: waiting %.1f s before retry %d of %d%s", last_error, wait, attempt + 1,
                               self.max_retries, asked)
                self._sleep(wait)
        raise RequestFailed(f"{last_error} (gave up after {self.max_retries + 1} tries)")

    def _first_model(self) -> str:
        try:
            listing = self._http("GET", "/models")
        except RequestFailed as err:
            raise ConnectionError(f"cannot list the models of {self.base_url} (pass the model name, or check that "
                                  f"the server runs): {err}") from None
        models = listing.get("data") or []
        if not models or not isinstance(models[0], dict) or "id" not in models[0]:
            raise ValueError(f"{self.base_url}/models lists no model; pass the model name")
        return models[0]["id"]

    # ------------------------------------------------------------------------------------- generation
    def _payload(self, request: GenerationRequest, n: int, seed: int) -> tuple[str, dict]:
        payload: dict[str, Any] = {"model": self.model, "n": n, "max_tokens": self.settings.max_new_tokens,
                                   "temperature": self.settings.temperature if self.settings.do_sample else 0.0,
                                   "top_p": self.settings.top_p,
                                   "seed": seed, **self.extra_body}
        if self.endpoint == "chat":
            payload["messages"] = request.messages
            return "/chat/completions", payload
        payload["prompt"] = request.plain_prompt
        return "/completions", payload

    def _texts(self, response: dict) -> tuple[list[str], int]:
        choices = response.get("choices")
        if not isinstance(choices, list):
            raise RequestFailed(f"response has no 'choices': {json.dumps(response)[:200]}")
        choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        texts = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if self.endpoint == "chat":
                text = (choice.get("message") or {}).get("content")
            else:
                text = choice.get("text")
            texts.append(text if isinstance(text, str) else "")
        usage = response.get("usage") or {}
        tokens = usage.get("completion_tokens", 0) if isinstance(usage, dict) else 0
        return texts, int(tokens or 0)

    def generate_one(self, request: GenerationRequest) -> Generation:
        """All ``n`` samples of one request (asking again when the server returns fewer choices)."""
        self.check_request(request)
        generation = Generation()
        for round_ in range(request.n):
            missing = request.n - len(generation.texts)
            if missing <= 0:
                break
            path, payload = self._payload(request, missing, request.seed + round_)
            try:
                texts, tokens = self._texts(self._http("POST", path, payload))
            except RequestFailed as err:
                generation.error = str(err)
                self._count(failed=True, reason=str(err))
                return generation
            if not texts:
                generation.error = "the server returned no choices"
                self._count(failed=True, reason=generation.error)
                return generation
            generation.texts += texts[:missing]
            generation.tokens += tokens
        self._count(failed=False)
        return generation

    def _count(self, *, failed: bool, reason: str = "") -> None:
        with self._lock:
            self._failures_in_a_row = self._failures_in_a_row + 1 if failed else 0
            if failed and self.max_consecutive_failures and self._dead is None \
                    and self._failures_in_a_row >= self.max_consecutive_failures:
                self._dead = (f"{self.base_url}: {self._failures_in_a_row} requests in a row failed; the last: "
                              f"{reason}. Stopping; completed records are kept, and re-running resumes")
                self._stop.set()  # the other requests in flight stop retrying

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, Generation]]:
        for request in requests:
            self.check_request(request)
        if self._dead:
            raise ServerUnavailable(self._dead)
        futures = {self._submit(request): position for position, request in enumerate(requests)}
        try:
            for future in concurrent.futures.as_completed(futures):
                if self._dead:
                    raise ServerUnavailable(self._dead)
                position = futures[future]
                try:
                    yield position, future.result()
                except Exception as err:  # a bug in a response handler: that request fails, visibly
                    yield position, Generation(error=f"{type(err).__name__}: {err}")
        finally:
            for future in futures:
                future.cancel()

    def _submit(self, request: GenerationRequest) -> concurrent.futures.Future:
        """Run ``generate_one(request)`` on a daemon worker (daemon: an interrupted run never waits for it)."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            self._stop.clear()
            for i in range(self.concurrency):
                worker = threading.Thread(target=self._work, args=(self._jobs,), name=f"o1-openai-{i}", daemon=True)
                worker.start()
                self._workers.append(worker)
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, request))
        return future

    def _work(self, jobs: queue.SimpleQueue) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            future, request = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.generate_one(request))
            except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(err)

    def close(self) -> None:
        """Stop: retry loops end at once, queued requests are dropped, requests in flight are not waited for."""
        self._stop.set()
        if self._jobs is not None:
            for _ in self._workers:
                self._jobs.put(None)
            self._jobs = None
            self._workers = []


def _error_detail(err: urllib.error.HTTPError) -> str:
    try:
        body = err.read().decode("utf-8", "replace")
    except Exception:
        body = ""
    try:
        message = json.loads(body).get("error")
        if isinstance(message, dict):
            message = message.get("message")
        if message:
            return str(message)[:300]
    except (ValueError, AttributeError):
        pass
    return (body or err.reason or "").strip()[:300]


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
