"""Liveness and what this volantd is."""

from __future__ import annotations

from collections import Counter
from typing import Any

import psutil
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


@router.get("/api/v1/system/status", tags=["system"])
def system_status(request: Request) -> dict[str, Any]:
    """Liveness with the numbers upstream's CLI expected (and upstream never sent)."""
    _, total = request.app.state.services.db.vms.list(limit=0)
    return {
        "status": "ok",
        "vm_count": total,
        "cpu_percent": psutil.cpu_percent(interval=None),
        "mem_percent": psutil.virtual_memory().percent,
    }


@router.get("/api/v1/system/summary", tags=["system"])
def system_summary(request: Request) -> dict[str, Any]:
    """Counts for a dashboard: VMs by status and runtime, plugins."""
    db = request.app.state.services.db
    vms, total = db.vms.list()
    plugins = db.plugins.list()
    return {
        "total_vms": total,
        "by_status": dict(Counter(vm.status for vm in vms)),
        "by_runtime": dict(Counter(vm.runtime.lower() for vm in vms)),
        "total_plugins": len(plugins),
        "enabled_plugins": sum(plugin.enabled for plugin in plugins),
        "plugins": [{"name": p.name, "version": p.version, "enabled": p.enabled} for p in plugins],
    }
