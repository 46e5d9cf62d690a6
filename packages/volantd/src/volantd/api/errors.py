"""Error responses: always ``{"error": "...", "request_id": "..."}``, with a deliberate status.

Invalid input is 400 (unreadable) or 422 (readable but wrong, with every problem's field path
in ``issues``), a missing thing 404, a clash with the current state 409; only volantd's own
faults are 500, and those name the request id to look for in the log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from pluginspec import SpecError
from volantd.api.middleware import request_id
from volantd.artifacts import ArtifactError
from volantd.devices import (
    DeviceConflictError,
    DeviceError,
    DeviceNotAllowedError,
    DeviceNotFoundError,
    DeviceOperationError,
)
from volantd.errors import VolantError
from volantd.store import ConflictError, NotFoundError
from volantd.vms.hypervisors import UnsupportedByHypervisorError
from volantd.vms.naming import InvalidNameError
from volantd.vms.orchestrator import ReadyTimeoutError

log = logging.getLogger("volantd.api")


class APIError(VolantError):
    """An error with its HTTP status, raised by route handlers."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFound(APIError):
    status = 404


class Conflict(APIError):
    status = 409


class Unprocessable(APIError):
    status = 422


def error_body(message: str, rid: str, **extra: Any) -> bytes:
    return json.dumps({"error": message, "request_id": rid, **extra}).encode()


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"error": message, "request_id": request_id.get(), **extra}, status_code=status
    )


def status_of(error: VolantError) -> int:
    """The HTTP status of a volantd error raised below the API."""
    if isinstance(error, APIError):
        return error.status
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, ReadyTimeoutError):
        return 504
    if isinstance(error, ArtifactError | InvalidNameError | UnsupportedByHypervisorError):
        return 422
    if isinstance(error, DeviceError):
        return _device_status(error)
    return 400


def _device_status(error: DeviceError) -> int:
    for kind, status in DEVICE_STATUS:
        if isinstance(error, kind):
            return status
    return 422  # InvalidDeviceError


DEVICE_STATUS: tuple[tuple[type[DeviceError], int], ...] = (
    (DeviceNotFoundError, 404),
    (DeviceNotAllowedError, 403),  # the host's VFIO allow-list
    (DeviceConflictError, 409),
    (DeviceOperationError, 500),  # the kernel refused a sysfs write, or did not finish it
)


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through one error format."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        issues = [
            {"path": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
            for error in exc.errors()
        ]
        unreadable = any(error.get("type") == "json_invalid" for error in exc.errors())
        summary = "; ".join(f"{issue['path']}: {issue['message']}" for issue in issues)
        return error_response(400 if unreadable else 422, summary, issues=issues)

    @app.exception_handler(SpecError)
    async def invalid_document(request: Request, exc: SpecError) -> JSONResponse:
        issues = [{"path": issue.path, "message": issue.message} for issue in exc.issues]
        return error_response(422, str(exc), issues=issues)

    @app.exception_handler(VolantError)
    async def volant_error(request: Request, exc: VolantError) -> JSONResponse:
        return error_response(status_of(exc), str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # runs outside the request-id middleware, which left the id in the scope
        rid = request.scope.get("state", {}).get("request_id") or request_id.get()
        log.exception("internal error in %s %s", request.method, request.url.path)
        message = f"internal error; look for request id {rid} in volantd's log"
        return JSONResponse({"error": message, "request_id": rid}, status_code=500)
