"""``o1-embedder serve``: the OpenAI embeddings API over HTTP, batching concurrent requests together.

Modules: ``settings`` (the one settings dataclass), ``runner`` (model calls and preparation), ``batcher``
(cross-request batching on one model thread), ``service`` (timeouts, cache hits, shutdown), ``schemas`` (request
and response), ``app`` (FastAPI routes and error handlers), ``server`` (uvicorn), ``cli`` (the command).
FastAPI and uvicorn are optional: ``pip install 'o1-embedder[serve]'``.
"""

from o1_embedder.serving.settings import ServeSettings

__all__ = ["ServeSettings"]
