"""``/api/v1/vfio``: host PCI devices for passthrough (upstream's paths and field names).

Unlike upstream, binding follows the rules VM starts follow (docs/devices.md): the host's
allow-list, whole IOMMU groups, and no device another VM holds. What an operator binds is
claimed for no VM: ``unbind`` gives it back to the driver it had, and a VM that asks for it
takes it over.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import AfterValidator, BaseModel, Field

from volantd.devices import AllowList, Binding, DeviceManager, InvalidDeviceError, PciDevice
from volantd.devices import parse_address as _parse_address
from volantd.store import DeviceClaim

router = APIRouter(prefix="/api/v1/vfio", tags=["vfio"])


def _address(value: str) -> str:
    try:
        return _parse_address(value)
    except InvalidDeviceError as error:
        raise ValueError(str(error)) from None


PciAddress = Annotated[str, AfterValidator(_address)]


class DeviceRequest(BaseModel):
    pci_address: PciAddress


class DevicesRequest(BaseModel):
    pci_addresses: list[PciAddress] = Field(min_length=1)


class ValidateRequest(BaseModel):
    """Addresses are checked by the route, so a bad one is an answer, not an error."""

    pci_addresses: list[str] = Field(min_length=1)
    allowlist: list[str] = Field(default_factory=list)


def manager(request: Request) -> DeviceManager:
    devices: DeviceManager = request.app.state.services.devices
    return devices


def claim_view(claim: DeviceClaim) -> dict[str, Any]:
    return {
        "address": claim.address,
        "vm_name": claim.vm_name,
        "original_driver": claim.original_driver,
        "bound_at": claim.bound_at.isoformat(),
    }


def device_view(device: PciDevice, claim: DeviceClaim | None = None) -> dict[str, Any]:
    """Upstream's fields, plus the class, ``driver_override`` and volantd's claim."""
    return {
        "address": device.address,
        "vendor": device.vendor,
        "device": device.device,
        "class": device.class_code,
        "driver": device.driver or "",
        "driver_override": device.driver_override,
        "iommu_group": device.iommu_group,
        "numa_node": device.numa_node,
        "bridge": device.is_bridge,
        "claim": claim_view(claim) if claim is not None else None,
    }


def binding_view(binding: Binding) -> dict[str, Any]:
    return {
        "address": binding.address,
        "driver": binding.driver or "",
        "original_driver": binding.original_driver,
    }


@router.post("/devices/info")
def device_info(request: Request, body: DeviceRequest) -> dict[str, Any]:
    """One PCI device: ids, driver, IOMMU group, NUMA node, and who holds it."""
    device, claim = manager(request).info(body.pci_address)
    return device_view(device, claim)


@router.post("/devices/validate")
def validate_devices(request: Request, body: ValidateRequest) -> dict[str, Any]:
    """Whether the devices could be bound now; 200 either way, with every problem."""
    allowlist = AllowList.parse(body.allowlist) if body.allowlist else None
    errors = manager(request).problems(body.pci_addresses, allowlist)
    if not errors:
        return {"valid": True, "message": "all devices can be passed through", "errors": []}
    return {"valid": False, "message": f"{len(errors)} problem(s)", "errors": errors}


@router.post("/devices/iommu-groups")
def iommu_groups(request: Request, body: DevicesRequest) -> list[dict[str, Any]]:
    """The IOMMU groups of the devices: the requested ones (``devices``, as upstream) and
    every member, which VFIO hands over together."""
    return [
        {
            "id": group.id,
            "devices": list(group.requested),
            "members": [device_view(member) for member in group.members],
        }
        for group in manager(request).groups(body.pci_addresses)
    ]


@router.post("/devices/bind")
def bind_devices(request: Request, body: DevicesRequest) -> dict[str, Any]:
    """Bind to vfio-pci (the whole list or nothing), claimed for no VM."""
    bound = manager(request).bind(body.pci_addresses)
    return {
        "success": True,
        "message": f"{len(bound)} device(s) bound to vfio-pci",
        "bound_devices": [binding.address for binding in bound],
        "devices": [binding_view(binding) for binding in bound],
    }


@router.post("/devices/unbind")
def unbind_devices(request: Request, body: DevicesRequest) -> dict[str, Any]:
    """Give devices bound through ``bind`` back to the driver they had; a device a VM holds
    is refused (409), one not on vfio-pci is left as it is."""
    unbound = manager(request).unbind(body.pci_addresses)
    return {
        "success": True,
        "message": f"{len(unbound)} device(s) given back to the host",
        "unbound_devices": [binding.address for binding in unbound],
        "devices": [binding_view(binding) for binding in unbound],
    }


@router.post("/devices/group-paths")
def group_paths(request: Request, body: DevicesRequest) -> dict[str, Any]:
    """The sysfs folders of devices bound to vfio-pci, as Cloud Hypervisor's ``--device
    path=`` takes them (upstream's name; they are device folders, not ``/dev/vfio/N``)."""
    paths = manager(request).paths(body.pci_addresses)
    return {"group_paths": [str(path) for path in paths]}


@router.get("/claims")
def list_claims(request: Request) -> list[dict[str, Any]]:
    """Every device volantd holds: for which VM (null: bound by an operator), since when,
    and the driver it goes back to."""
    return [claim_view(claim) for claim in manager(request).db.device_claims.all()]
