"""``POST /api/v1/mcp``: upstream's small command endpoint, kept for its clients.

Not the Model Context Protocol: ``{"command": ..., "params": {...}}`` in, always 200 with
``{"result": ..., "error": ...}`` out (422 only for a body that is not such an object).
Unlike upstream, ``volant.vms.create`` has no ``"browser"`` default: it needs ``plugin`` (or
upstream's ``runtime``, naming the plugin), and it boots like ``POST /api/v1/vms``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from volantd.errors import VolantError
from volantd.vms.orchestrator import CreateRequest, Orchestrator

router = APIRouter(tags=["system"])

CAPABILITIES = {
    "commands": [
        {"name": "volant.vms.list", "description": "List VMs", "params": {}},
        {
            "name": "volant.vms.create",
            "description": "Create and boot a VM from an installed plugin",
            "params": {"name": "string (required)", "plugin": "string (or runtime)"},
        },
        {"name": "volant.system.get_capabilities", "description": "This list", "params": {}},
    ]
}


class Command(BaseModel):
    command: str
    params: dict[str, Any] = Field(default_factory=dict)


def _summary(vm: Any) -> dict[str, Any]:
    return {
        "id": vm.id, "name": vm.name, "status": vm.status, "ip_address": vm.ip_address or "",
        "cpu_cores": vm.cpu_cores, "memory_mb": vm.memory_mb,
    }  # fmt: skip


@router.post("/api/v1/mcp")
async def mcp(request: Request, body: Command) -> dict[str, Any]:
    """Run one command; errors are reported in ``error`` with status 200, as upstream."""
    vms: Orchestrator = request.app.state.services.vms
    try:
        if body.command == "volant.vms.list":
            records, _ = request.app.state.services.db.vms.list()
            return {"result": [_summary(vm) for vm in records], "error": None}
        if body.command == "volant.vms.create":
            name = body.params.get("name")
            plugin = body.params.get("plugin") or body.params.get("runtime")
            if not isinstance(name, str) or not isinstance(plugin, str):
                return {"result": None, "error": "params: name and plugin are required strings"}
            record = await vms.create(CreateRequest(name=name, plugin=plugin))
            return {"result": _summary(record), "error": None}
        if body.command == "volant.system.get_capabilities":
            return {"result": CAPABILITIES, "error": None}
        return {"result": None, "error": f"unknown command: {body.command}"}
    except VolantError as error:
        return {"result": None, "error": str(error)}
