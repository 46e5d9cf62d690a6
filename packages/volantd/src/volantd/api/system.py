"""Liveness and what this volantd is."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from volantd import __version__

router = APIRouter()


@router.get("/healthz", tags=["system"])
def healthz() -> dict[str, str]:
    """Liveness: 200 while the daemon serves (no API key needed)."""
    return {"status": "ok"}


@router.get("/api/v1/system/info", tags=["system"])
def system_info(request: Request) -> dict[str, Any]:
    """Version and where this volantd keeps its state."""
    services = request.app.state.services
    settings = services.settings
    return {
        "status": "ok",
        "version": __version__,
        "api_listen_addr": str(settings.unix_socket) if settings.unix_socket else settings.listen,
        "home": str(settings.home),
        "auth": settings.api_key is not None,
    }
