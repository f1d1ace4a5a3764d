"""Every failure as an OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.

The library's own errors (zaya_edge/errors.py) become 400s, a full queue 429, a bad key 401;
anything else is logged with its traceback on the server and answered with a one-line 500.
A client never sees a traceback, and no request can stop the server.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from zaya_edge.errors import ContextFullError, ZayaEdgeError
from zaya_edge.runtime.scheduler import QueueFull

log = logging.getLogger("zaya_edge.serve")


class APIError(Exception):
    """An error answered as is: status, message, and the OpenAI fields a client may branch on."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def from_exception(exc: BaseException) -> APIError:
    """The APIError a library or scheduler exception stands for (500 for anything unexpected)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFull):
        return APIError(429, f"the server is busy: {exc}", type="rate_limit_error", code="rate_limit_exceeded")
    if isinstance(exc, ContextFullError):
        return bad_request(str(exc), code="context_length_exceeded")
    if isinstance(exc, ZayaEdgeError):
        return bad_request(str(exc))
    log.error("internal error", exc_info=exc)
    return APIError(500, "internal server error", type="server_error")


def _validation_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return bad_request("the request body is not valid JSON", code="invalid_json")
    param = ".".join(loc) or None
    where = f"{param}: " if param else ""
    return bad_request(f"{where}{first.get('msg', 'invalid request')}", param=param, code="invalid_value")


def install(app: FastAPI) -> None:
    """Route every exception through one place."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), type=kind).response()

    @app.exception_handler(json.JSONDecodeError)
    async def _json(request: Request, exc: json.JSONDecodeError):
        return bad_request("the request body is not valid JSON", code="invalid_json").response()

    @app.exception_handler(APIError)
    @app.exception_handler(ZayaEdgeError)
    async def _known(request: Request, exc: Exception):
        return from_exception(exc).response()

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception):  # Starlette re-raises it: uvicorn logs the traceback
        return APIError(500, "internal server error", type="server_error").response()
