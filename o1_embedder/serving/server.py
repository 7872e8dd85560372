"""Running the app under uvicorn: loading the model, graceful shutdown, and a background server for tests.

:class:`EmbeddingServer` tells the service the moment shutdown begins (before uvicorn waits for open
requests): from then on new requests get 503, queued ones are still answered for ``shutdown_timeout_s`` and
then refused with 503, so every accepted request gets an answer.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import uvicorn
from sentence_transformers import SentenceTransformer

from o1_embedder.generation.cache import ThoughtCache
from o1_embedder.model.module import O1Embedder
from o1_embedder.serving.app import create_app
from o1_embedder.serving.service import EmbeddingService
from o1_embedder.serving.settings import ServeSettings

__all__ = ["BackgroundServer", "EmbeddingServer", "build_service", "load_for_serving", "serve"]

logger = logging.getLogger(__name__)

#: uvicorn cancels requests still open this long after the service's own shutdown deadline (they are refused
#: with 503 at that deadline, so this is only a backstop).
SHUTDOWN_MARGIN_S = 5.0


class EmbeddingServer(uvicorn.Server):
    """uvicorn's server, which first tells the service that shutdown began."""

    def __init__(self, config: uvicorn.Config, service: EmbeddingService):
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.begin_shutdown()
        await super().shutdown(sockets)


def load_for_serving(name_or_path: str, settings: ServeSettings) -> tuple[SentenceTransformer, str]:
    """Load ``name_or_path`` (a model folder, or ``o1-embedder`` for the embedded default), apply the settings
    that change the model (device, thinking, thought cache), and return it with the name clients use."""
    from o1_embedder.generation.backends import check_device
    from o1_embedder.model.loading import load_model

    check_device(settings.device)
    model = load_model(name_or_path)
    if not isinstance(model[0], O1Embedder):
        raise ValueError(f"{name_or_path}: not an o1-embedder model (its first module is {type(model[0]).__name__})")
    if settings.device:
        model.to(settings.device)
    model.eval()
    configure_module(model[0], settings)
    name = settings.served_model_name or os.path.basename(os.path.normpath(name_or_path))
    return model, name


def configure_module(module: O1Embedder, settings: ServeSettings) -> None:
    """Thinking overrides (K, thought length, greedy) and the thought cache location from the settings."""
    settings.apply(module)
    if settings.thought_cache is not None:
        off = settings.thought_cache.strip().lower() in ("off", "none", "")
        module.thought_cache = None if off else ThoughtCache(settings.thought_cache)
    if settings.generation_url is not None:
        from o1_embedder.generation.remote import CompletionsThoughtWriter

        module.thought_writer = CompletionsThoughtWriter(settings.generation_url, settings.generation_model,
                                                         timeout_s=settings.generation_timeout_s,
                                                         concurrency=settings.max_batch)
        logger.info("thoughts from %s (model %r); this server embeds", module.thought_writer.url,
                    module.thought_writer.model)


def build_service(model: SentenceTransformer | O1Embedder, settings: ServeSettings, name: str) -> EmbeddingService:
    """The service for a loaded model, with the settings' thinking overrides and thought cache applied."""
    module = model[0] if isinstance(model, SentenceTransformer) else model
    configure_module(module, settings)
    return EmbeddingService(module, settings, name)


def make_server(service: EmbeddingService) -> EmbeddingServer:
    settings = service.settings
    config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port, log_level=settings.log_level,
                            timeout_graceful_shutdown=int(settings.shutdown_timeout_s + SHUTDOWN_MARGIN_S) + 1,
                            lifespan="on")
    return EmbeddingServer(config, service)


def serve(model: SentenceTransformer, settings: ServeSettings, name: str) -> None:
    """Serve ``model`` until SIGINT/SIGTERM (then shut down gracefully)."""
    if settings.api_key is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s without an API key: anyone who reaches this address can use the model "
                       "(set --api-key or $O1_EMBEDDER_API_KEY)", settings.host)
    logger.info("serving %r on http://%s:%d/v1 with %r", name, settings.host, settings.port, settings)
    make_server(build_service(model, settings, name)).run()


class BackgroundServer:
    """The server in a background thread on a free port of 127.0.0.1 (tests, benchmarks, notebooks).

    ``with BackgroundServer(model, settings) as server: OpenAI(base_url=server.url, ...)``; :meth:`stop` shuts
    it down as SIGTERM would (gracefully), ``stop(force=True)`` without waiting for open requests.
    """

    def __init__(self, model: SentenceTransformer | O1Embedder, settings: ServeSettings | None = None,
                 name: str = "o1-embedder"):
        settings = settings or ServeSettings()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.service = build_service(model, settings, name)
        self.server = make_server(self.service)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        name="o1-embedder-server", daemon=True)

    @property
    def url(self) -> str:
        """The OpenAI base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see its log)")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0, force: bool = False) -> None:
        """Shut down (gracefully unless ``force``) and wait up to ``timeout`` seconds for the thread to end."""
        self.server.should_exit = True
        self.server.force_exit = force
        self._thread.join(timeout)
        if force:  # uvicorn skips the app's shutdown when forced: stop the model thread here
            self.service.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
