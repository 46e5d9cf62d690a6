"""``/api/v1/vms``: create, list, get, start, stop, restart, delete, and the versioned config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pluginspec import apply_patch, parse_vm_config, parse_vm_config_patch
from volantd.api.errors import APIError
from volantd.cloudinit.sources import refuse_host_files
from volantd.store import PortLease, VMRecord
from volantd.vms import states
from volantd.vms.orchestrator import (
    DEFAULT_READY_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    CreateRequest,
    Orchestrator,
)

router = APIRouter(prefix="/api/v1/vms", tags=["vms"])

WaitParam = Annotated[
    Literal["none", "agent", "healthy"],
    Query(description="return once the agent is ready (default), the workload healthy, or at once"),
]
TimeoutParam = Annotated[float, Query(gt=0, le=3600, description="seconds to wait")]
MAX_PAGE_INDEX = 2**31 - 1
SORT_KEYS = ("name", "status", "runtime", "created_at", "updated_at")


class CreateVM(BaseModel):
    """Upstream's create request; ``config`` is a full VM config document."""

    name: str
    plugin: str | None = None
    runtime: str | None = None
    cpu_cores: int | None = Field(None, ge=1, le=256)
    memory_mb: int | None = Field(None, ge=64, le=1024 * 1024)
    kernel_cmdline: str | None = None
    config: dict[str, Any] | None = None


def orchestrator(request: Request) -> Orchestrator:
    vms: Orchestrator = request.app.state.services.vms
    return vms


def vm_view(
    request: Request, record: VMRecord, leases: list[PortLease] | None = None
) -> dict[str, Any]:
    """The VM object: upstream's fields plus what upstream lacked (ports, boot, errors)."""
    if leases is None:
        leases = request.app.state.services.db.ports.leases(record.name)
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "plugin": record.plugin,
        "runtime": record.runtime,
        "pid": record.pid,
        "ip_address": record.ip_address or "",
        "mac_address": record.mac_address,
        "cpu_cores": record.cpu_cores,
        "memory_mb": record.memory_mb,
        "kernel_cmdline": record.kernel_cmdline or "",
        "network_mode": record.network_mode,
        "hypervisor": record.hypervisor,
        "accel": record.accel,
        "deployment": record.deployment,
        "agent_url": record.agent_url,
        "ports": [{"purpose": lease.purpose, "host_port": lease.port} for lease in leases],
        "serial_log": str(record.run_dir / "serial.log"),
        "console_socket": str(record.run_dir / "console.sock"),
        "config_version": record.config_version,
        "boot": record.boot,
        "last_error": record.last_error,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


@router.get("")
def list_vms(
    request: Request,
    response: Response,
    status: Annotated[list[str] | None, Query()] = None,
    runtime: str | None = None,
    plugin: str | None = None,
    q: str | None = None,
    limit: Annotated[int | None, Query(ge=0, le=MAX_PAGE_INDEX)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE_INDEX)] = 0,
    sort: str = "created_at",
    order: Literal["asc", "desc"] = "asc",
) -> list[dict[str, Any]]:
    """VMs with upstream's filters; ``X-Total-Count`` is the count before paging."""
    statuses = [part for value in status or [] for part in value.split(",") if part]
    records, total = request.app.state.services.db.vms.list(
        status=statuses or None, runtime=runtime, plugin=plugin, q=q,
        sort=sort if sort in SORT_KEYS else "created_at", order=order,
        limit=limit, offset=offset,
    )  # fmt: skip
    response.headers["X-Total-Count"] = str(total)
    leases: dict[str, list[PortLease]] = {}
    for lease in request.app.state.services.db.ports.all():  # one query, not one per VM
        leases.setdefault(lease.vm_name, []).append(lease)
    return [vm_view(request, record, leases.get(record.name, [])) for record in records]


@router.post("", status_code=201)
async def create_vm(
    request: Request,
    body: CreateVM,
    wait: WaitParam = "agent",
    timeout: TimeoutParam = DEFAULT_READY_TIMEOUT_S,
    start: Annotated[bool, Query(description="false: only record the VM")] = True,
    background: Annotated[
        bool, Query(alias="async", description="true: answer 202 at once, boot in the background")
    ] = False,
) -> Any:
    """Create a VM from an installed, enabled plugin and boot it."""
    vms = orchestrator(request)
    if body.runtime and body.plugin and body.runtime != body.plugin:
        manifest_runtime = request.app.state.services.db.plugins.get(body.plugin).runtime
        if body.runtime != manifest_runtime:
            raise APIError(
                f"runtime {body.runtime!r} does not match plugin {body.plugin!r} "
                f"(runtime {manifest_runtime!r})", 422,
            )  # fmt: skip
    create = CreateRequest(
        name=body.name, plugin=body.plugin, cpu_cores=body.cpu_cores,
        memory_mb=body.memory_mb, kernel_cmdline=body.kernel_cmdline, config=body.config,
    )  # fmt: skip
    record = await vms.create(
        create, start=start, wait=wait, timeout_s=timeout, background=background
    )
    view = vm_view(request, record)
    return JSONResponse(view, status_code=202) if background and start else view


@router.get("/{name}")
def get_vm(request: Request, name: str) -> dict[str, Any]:
    """One VM, with its boot waterfall (``boot``) and forwarded ports."""
    return vm_view(request, orchestrator(request).get(name))


@router.post("/{name}/start")
async def start_vm(
    request: Request, name: str, wait: WaitParam = "agent",
    timeout: TimeoutParam = DEFAULT_READY_TIMEOUT_S,
) -> dict[str, Any]:  # fmt: skip
    """Boot a stopped, crashed or pending VM (409 while it runs)."""
    record = await orchestrator(request).start(name, wait=wait, timeout_s=timeout)
    return vm_view(request, record)


@router.post("/{name}/stop")
async def stop_vm(
    request: Request, name: str, timeout: TimeoutParam = DEFAULT_STOP_TIMEOUT_S
) -> dict[str, Any]:
    """Stop: the agent shuts the guest down; after ``timeout`` the VMM is stopped, then killed."""
    return vm_view(request, await orchestrator(request).stop(name, timeout_s=timeout))


@router.post("/{name}/restart")
async def restart_vm(
    request: Request, name: str, wait: WaitParam = "agent",
    timeout: TimeoutParam = DEFAULT_READY_TIMEOUT_S,
) -> dict[str, Any]:  # fmt: skip
    """Stop, then start (a config patch takes effect here)."""
    record = await orchestrator(request).restart(name, wait=wait, timeout_s=timeout)
    return vm_view(request, record)


@router.delete("/{name}", status_code=204)
async def delete_vm(request: Request, name: str) -> Response:
    """Stop the VM if it runs, then remove it and its run directory."""
    await orchestrator(request).delete(name)
    return Response(status_code=204)


def config_view(version: Any) -> dict[str, Any]:
    return {
        "version": version.version,
        "updated_at": version.created_at.isoformat(),
        "config": version.config,
    }


@router.get("/{name}/config")
def get_config(request: Request, name: str) -> dict[str, Any]:
    """The current config version."""
    return config_view(request.app.state.services.db.vms.config(name))


@router.get("/{name}/config/history")
def config_history(
    request: Request, name: str, limit: Annotated[int, Query(ge=0, le=MAX_PAGE_INDEX)] = 0
) -> list[dict[str, Any]]:
    """Every config version, newest first (``limit`` 0: all)."""
    versions = request.app.state.services.db.vms.config_history(name, limit or None)
    return [{"id": v.version, **config_view(v)} for v in versions]


@router.patch("/{name}/config")
def patch_config(request: Request, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Merge a patch into the config as a new version; it applies on the next (re)start."""
    db = request.app.state.services.db
    record = db.vms.get(name)
    current = parse_vm_config(db.vms.config(name).config)
    patch = parse_vm_config_patch(body)
    refuse_host_files(patch.cloud_init)
    patched = apply_patch(current, patch)
    if patched.plugin != record.plugin:
        raise APIError("plugin cannot be changed on an existing VM; create a new VM", 422)
    version = db.vms.put_config(name, patched.model_dump(mode="json"))
    resources = patched.resources
    if record.status not in states.ACTIVE:
        db.vms.update(name, cpu_cores=resources.cpu_cores, memory_mb=resources.memory_mb,
                      kernel_cmdline=patched.kernel_cmdline or None)  # fmt: skip
    return config_view(version)
