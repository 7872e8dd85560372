"""Errors as the OpenAI API shapes them: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "error_body"]


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body of an error response, as OpenAI's API sends it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ApiError(Exception):
    """An error answered to the client: status, message and OpenAI's ``type`` / ``param`` / ``code`` fields.

    Raised anywhere below a route; the app's exception handler turns it into the JSON response.
    """

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    @classmethod
    def bad_request(cls, message: str, param: str | None = None, code: str | None = None) -> ApiError:
        return cls(400, message, "invalid_request_error", param, code)

    @classmethod
    def unavailable(cls, message: str, code: str) -> ApiError:
        """503: the server refuses the work now (shutting down, queue full); retrying later may succeed."""
        return cls(503, message, "server_error", None, code)
