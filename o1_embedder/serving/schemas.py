"""The OpenAI embeddings request and response, and the checks that need the served model's limits."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from o1_embedder.serving.errors import ApiError
from o1_embedder.serving.settings import ServeSettings

__all__ = ["EmbeddingCall", "EmbeddingRequest", "check_request", "render_embeddings"]


def _text_input(value: Any) -> Any:
    """``input`` must be a string or a non-empty list of strings; token-id lists get their own message."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise PydanticCustomError("input_not_text", "must be a string or a list of strings, got {got}",
                                  {"got": type(value).__name__})
    if not value:
        raise PydanticCustomError("empty_input", "must not be an empty list")
    for i, item in enumerate(value):
        if isinstance(item, (int, list)) and not isinstance(item, bool):
            raise PydanticCustomError("token_ids", "token-id input is not supported: send text (a string or a list "
                                                   "of strings); the server tokenises with the model's own formats")
        if not isinstance(item, str):
            raise PydanticCustomError("input_item_type", "item {index} must be a string, got {got}",
                                      {"index": i, "got": type(item).__name__})
    return value


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings`` body: OpenAI's fields plus ``input_type`` and ``think``. Unknown fields are refused
    (as OpenAI does), so a misspelt ``input_type`` is an error rather than silently the default."""

    model_config = ConfigDict(extra="forbid")

    input: Annotated[str | list[str], BeforeValidator(_text_input)] = Field(
        description="a text or a list of texts (token-id lists are refused)")
    model: StrictStr | None = Field(None, description="must be the served model's name, or omitted")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="'float': lists of numbers; 'base64': little-endian float32 bytes, base64")
    dimensions: StrictInt | None = Field(
        None, description="keep the first N dimensions, then L2-normalise again (the model was not trained for it)")
    input_type: Literal["query", "document"] | None = Field(
        None, description="'query' (may think) or 'document'; default: the server's --default-input-type")
    think: StrictBool | None = Field(None, description="queries only: think before embedding (default: the model's)")
    user: StrictStr | None = Field(None, description="accepted for compatibility, unused")


@dataclass(frozen=True)
class EmbeddingCall:
    """A checked request: what to embed and how to answer."""

    texts: list[str]
    input_type: str
    think: bool
    dimensions: int | None
    encoding_format: str


def check_request(body: EmbeddingRequest, *, name: str, dimension: int, default_think: bool,
                  settings: ServeSettings) -> EmbeddingCall:
    """The checks that depend on the served model and the settings; raises :class:`ApiError` (400/404)."""
    if body.model is not None and body.model != name:
        raise ApiError(404, f"The model {body.model!r} does not exist here; this server serves {name!r}",
                       "invalid_request_error", "model", "model_not_found")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if len(texts) > settings.max_inputs:
        raise ApiError.bad_request(f"{len(texts)} inputs in one request; the limit is {settings.max_inputs}",
                                   "input", "too_many_inputs")
    for i, text in enumerate(texts):
        if not text.strip():  # as OpenAI: an empty input is an error, not the embedding of nothing
            raise ApiError.bad_request(f"input[{i}] is empty; every input needs some text", "input", "empty_input")
        if len(text) > settings.max_input_chars:
            raise ApiError.bad_request(f"input[{i}] has {len(text)} characters; the limit is "
                                       f"{settings.max_input_chars}", "input", "input_too_long")
        _check_unicode(text, i)
    if body.dimensions is not None and not 1 <= body.dimensions <= dimension:
        raise ApiError.bad_request(f"dimensions must be between 1 and {dimension} (the model's size), got "
                                   f"{body.dimensions}", "dimensions", "invalid_dimensions")
    input_type = body.input_type or settings.default_input_type
    if input_type == "document" and body.think:
        raise ApiError.bad_request("think applies to queries only (input_type 'query'); documents are embedded "
                                   "directly", "think", "think_for_documents")
    think = default_think if body.think is None else body.think
    return EmbeddingCall(texts, input_type, think and input_type == "query", body.dimensions, body.encoding_format)


def _check_unicode(text: str, index: int) -> None:
    """JSON can carry lone surrogates (``"\\ud800"``), which no tokenizer accepts: refuse them as bad input."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ApiError.bad_request(f"input[{index}] is not valid Unicode text ({err.reason} at character "
                                   f"{err.start})", "input", "invalid_text") from None


def render_embeddings(vectors: np.ndarray, call: EmbeddingCall, name: str, tokens: int) -> bytes:
    """The JSON response body in OpenAI's shape, encoded (large responses are built off the event loop)."""
    if call.dimensions is not None:
        vectors = vectors[:, :call.dimensions]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    broken = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if broken.size:  # never a 200 whose JSON strict parsers reject (NaN) or whose vectors are garbage
        raise ApiError(500, f"the model produced non-finite values for input[{int(broken[0])}] "
                            f"({broken.size} input(s) in all); the model's weights or dtype may overflow",
                       "server_error", None, "non_finite_embedding")
    if call.encoding_format == "base64":
        encoded: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        encoded = vectors.tolist()
    body = {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)],
            "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
