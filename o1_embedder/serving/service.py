"""The embedding service behind the HTTP routes: preparation, cache hits, batching, timeouts and shutdown.

Nothing here blocks the event loop: tokenising, thought-cache lookups and response encoding run on one
preparation thread, the model on the :class:`~o1_embedder.serving.batcher.Batcher`'s thread. Queries whose
thoughts are all cached are answered from the cache without queueing behind the model.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from o1_embedder.generation.remote import GenerationServerError
from o1_embedder.model.module import O1Embedder
from o1_embedder.serving.batcher import Batcher, BatchFailed, QueueFull, ShuttingDown
from o1_embedder.serving.errors import ApiError
from o1_embedder.serving.runner import THINK, ModelRunner
from o1_embedder.serving.settings import ServeSettings

__all__ = ["EmbeddingService"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EmbeddingService:
    """Embeds texts for the HTTP layer; one per served model.

    Args:
        module: the model's :class:`O1Embedder` (``model[0]`` of a loaded ``SentenceTransformer``).
        settings: server settings (batching, limits, timeouts).
        name: the model name clients send as ``model``.
    """

    def __init__(self, module: O1Embedder, settings: ServeSettings, name: str):
        if not isinstance(module, O1Embedder):
            raise TypeError(f"expected an O1Embedder module, got {type(module).__name__}")
        self.settings = settings
        self.name = name
        self.created = int(time.time())
        self.runner = ModelRunner(module)
        self.batcher = Batcher(self.runner, window_s=settings.batch_window_s, max_batch=settings.max_batch,
                               max_queued=settings.max_queued, continuous=settings.continuous_batching)
        self._prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="o1-embedder-prep")
        self.closing = False
        self.stats = {"requests": 0, "texts": 0, "cache_hits": 0, "refused": 0, "timeouts": 0, "failed": 0,
                      "disconnected": 0}

    @property
    def dimension(self) -> int:
        return self.runner.dimension

    @property
    def default_think(self) -> bool:
        return self.runner.default_think

    async def start(self) -> None:
        """Start the model thread and compute what later lookups need (the backbone fingerprint)."""
        self.batcher.start()
        await self.in_prep(self.runner.warm_up)

    async def in_prep(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the preparation thread (the owner of the tokenizer copy)."""
        return await asyncio.get_running_loop().run_in_executor(self._prep, fn, *args)

    async def embed(self, texts: list[str], input_type: str, think: bool) -> tuple[np.ndarray, int]:
        """Embeddings ``(n, dimension)`` of ``texts`` and the number of tokens the model reads for them.

        Raises :class:`ApiError`: 503 when shutting down or the queue is full, 504 after ``request_timeout_s``,
        500 when the batch holding these texts failed.
        """
        if self.closing:
            raise ApiError.unavailable("the server is shutting down", "shutting_down")
        self.stats["requests"] += 1
        self.stats["texts"] += len(texts)
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(self._embed(texts, input_type, think), timeout)
        except asyncio.TimeoutError:
            self.stats["timeouts"] += 1
            raise ApiError(504, f"the request was not answered within {timeout:g} s (request_timeout_s)",
                           "server_error", None, "timeout") from None

    async def _embed(self, texts: list[str], input_type: str, think: bool) -> tuple[np.ndarray, int]:
        prepared = await self.in_prep(self.runner.prepare, texts, input_type, think)
        if prepared.kind == THINK:
            self.stats["cache_hits"] += len(texts) - len(prepared.missing)
        if prepared.missing:
            try:
                job = self.batcher.submit(prepared)
                vectors = await job.future
            except (ShuttingDown, QueueFull) as err:
                self.stats["refused"] += 1
                raise ApiError.unavailable(str(err), "shutting_down" if isinstance(err, ShuttingDown) else
                                           "queue_full") from None
            except BatchFailed as err:
                self.stats["failed"] += 1
                if isinstance(err.cause, GenerationServerError):
                    raise ApiError(err.cause.status, f"the generation server failed on the batch holding this "
                                                     f"request: {err.cause}", "server_error", None,
                                   err.cause.code) from None
                raise ApiError(500, f"the model failed on the batch holding this request ({err}); other requests "
                                    f"are unaffected, retrying may succeed", "server_error", None,
                               "batch_failed") from None
        else:
            vectors = prepared.vectors
        return np.stack(vectors).astype(np.float32, copy=False), prepared.tokens

    def begin_shutdown(self) -> None:
        """Refuse new requests (503); queued ones are still answered for ``shutdown_timeout_s``, then refused."""
        if self.closing:
            return
        self.closing = True
        self.batcher.refuse_new()
        waiting = self.batcher.in_flight
        logger.info("shutting down: %d request(s) waiting, answering them for up to %g s", waiting,
                    self.settings.shutdown_timeout_s)
        asyncio.get_running_loop().call_later(self.settings.shutdown_timeout_s, self._refuse_waiting)

    def _refuse_waiting(self) -> None:
        refused = self.batcher.fail_pending(ShuttingDown("the server shut down before this request's turn came"))
        if refused:
            logger.warning("shutdown: refused %d request(s) not answered within shutdown_timeout_s", refused)

    def close(self) -> None:
        """Stop the model thread (what is still queued is refused) and the preparation thread."""
        self.closing = True
        self.batcher.close()
        self._prep.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict[str, Any]:
        """Status, queue and counters, and peak memory: what an operator or a load test wants to see."""
        status = "broken" if self.batcher.broken else "shutting_down" if self.closing else "ok"
        return {"status": status, "model": self.name, **({"error": self.batcher.broken} if self.batcher.broken else {}),
                "queued_texts": self.batcher.queued, "requests_in_flight": self.batcher.in_flight,
                "stats": {**self.stats, **self.batcher.stats}, "memory": peak_memory()}


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, when CUDA is in use, peak allocated GPU memory (MiB)."""
    memory: dict[str, float] = {}
    try:
        import resource  # Unix only
    except ImportError:
        pass
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        memory["peak_rss_mib"] = round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        memory["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return memory
