"""The HTTP layer: OpenAI's embeddings API on FastAPI.

Routes: ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``. Every error
is JSON in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``): 4xx for bad input (request
validation included), 401 for a missing or wrong API key, 503 while shutting down or when the queue is full,
504 on timeout, and a 500 without a traceback for anything unexpected.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from o1_embedder.serving.errors import ApiError, error_body
from o1_embedder.serving.schemas import EmbeddingRequest, check_request, render_embeddings
from o1_embedder.serving.service import EmbeddingService

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(service: EmbeddingService) -> FastAPI:
    """The FastAPI app for ``service``; its lifespan starts the model thread and stops it at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            service.begin_shutdown()
            service.close()

    app = FastAPI(title="o1-embedder", summary="Think-then-embed embeddings, OpenAI embeddings API",
                  lifespan=lifespan)
    app.state.service = service
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=service.settings.max_request_bytes)
    if service.settings.api_key is not None:
        app.add_middleware(ApiKey, key=service.settings.api_key)
    _add_routes(app, service)
    return app


def _add_routes(app: FastAPI, service: EmbeddingService) -> None:
    @app.post("/v1/embeddings")
    async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
        call = check_request(body, name=service.name, dimension=service.dimension,
                             default_think=service.default_think, settings=service.settings)
        work = asyncio.ensure_future(service.embed(call.texts, call.input_type, call.think))
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():  # the client left (or this handler was cancelled): its queued texts are dropped
                work.cancel()
        if not work.done() or work.cancelled():
            service.stats["disconnected"] += 1
            return Response(status_code=499)  # nobody reads it; the code nginx logs for a client gone
        vectors, tokens = work.result()
        content = await service.in_prep(render_embeddings, vectors, call, service.name, tokens)
        return Response(content, media_type="application/json")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(service)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id != service.name:
            raise ApiError(404, f"The model {model_id!r} does not exist here; this server serves {service.name!r}",
                           "invalid_request_error", "model", "model_not_found")
        return _model_card(service)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while serving; 503 once shutdown began or the model thread broke (so load balancers stop sending)."""
        report = service.health()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the body is already read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _model_card(service: EmbeddingService) -> dict[str, Any]:
    return {"id": service.name, "object": "model", "created": service.created, "owned_by": "o1-embedder",
            "dimensions": service.dimension}


# ------------------------------------------------------------------------------------------ errors
def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Request validation errors as 400s in OpenAI's shape, naming the field (``param``) and the problem."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    message, param = _describe(first)
    content_type = request.headers.get("content-type", "")
    if not first.get("loc", ())[1:] and "json" not in content_type.lower():
        message = (f"The request body must be JSON sent with the header 'Content-Type: application/json' "
                   f"(got {content_type or 'no Content-Type'!r})")
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return JSONResponse(error_body(message, "invalid_request_error", param, first.get("type") or "invalid_body"),
                        status_code=400)


def _describe(error: dict[str, Any]) -> tuple[str, str | None]:
    """A readable message and the top-level field for one pydantic/FastAPI validation error."""
    loc = [part for part in error.get("loc", ()) if part != "body"]
    kind = error.get("type")
    if kind == "json_invalid":
        return f"The request body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})", None
    if kind == "missing" and not loc:
        return "The request body is missing: send a JSON object with at least 'input'", None
    if kind in ("model_attributes_type", "dict_type", "model_type") and not loc:
        return "The request body must be a JSON object", None
    param = str(loc[0]) if loc else None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
    if kind == "extra_forbidden":
        return f"Unknown field {where!r}", param
    if kind == "missing":
        return f"Missing required field {where!r}", param
    return f"Invalid {where!r}: {error.get('msg', 'invalid value')}", param


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown path 404, wrong method 405, ...) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    codes = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = error_body(str(exc.detail), kind, None, codes.get(exc.status_code))
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unforeseen: logged with its traceback here, answered as a plain 500 without one."""
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("Internal server error", "server_error", None, "internal_error"), status_code=500)


# -------------------------------------------------------------------------------------- middleware
async def _send_error(scope: Scope, receive: Receive, send: Send, error: ApiError,
                      headers: dict[str, str] | None = None) -> None:
    await JSONResponse(error.body(), status_code=error.status, headers=headers)(scope, receive, send)


class ApiKey:
    """``Authorization: Bearer KEY`` on every path but ``/health`` (``/v1/*``, and ``/docs`` and ``/openapi.json``,
    which describe the API), checked before the body is read."""

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.key = key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health" and not self._authorised(scope):
            error = ApiError(401, "Incorrect or missing API key: send the header 'Authorization: Bearer KEY'",
                             "invalid_request_error", None, "invalid_api_key")
            await _send_error(scope, receive, send, error, {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413): by ``Content-Length`` at once, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status, what, code = (413, "too large", "request_too_large") if length.isdigit() else \
                (400, "invalid", "invalid_content_length")
            await _send_error(scope, receive, send, ApiError(status, f"Request body {what}: the limit is "
                                                                     f"{self.max_bytes} bytes", code=code))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, f"Request body too large: the limit is {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)
