"""`volar devices ...`: host PCI devices for passthrough (VFIO) through volantd.

volantd takes only devices its host allow-list (``VOLANT_VFIO_ALLOWLIST``) names, whole IOMMU
groups, and none another VM holds; `unbind` gives a device back to the driver it had.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from volar.context import OutputOption, client, fail
from volar.output import Format, emit

devices_app = typer.Typer(
    no_args_is_help=True, help="Host PCI devices for passthrough to VMs (VFIO)."
)
Addresses = Annotated[list[str], typer.Argument(help="PCI addresses, like 0000:01:00.0")]
DEVICE_COLUMNS = [("ADDRESS", "address"), ("ID", "id"), ("CLASS", "class"),
                  ("DRIVER", "driver"), ("IOMMU GROUP", "iommu_group"),
                  ("NUMA", "numa_node"), ("HELD BY", "held_by")]  # fmt: skip
BINDING_COLUMNS = [("ADDRESS", "address"), ("DRIVER", "driver"),
                   ("ORIGINAL DRIVER", "original_driver")]  # fmt: skip
CLAIM_COLUMNS = [("ADDRESS", "address"), ("HELD BY", "held_by"),
                 ("ORIGINAL DRIVER", "original_driver"), ("SINCE", "bound_at")]  # fmt: skip


def _post(path: str, body: dict[str, Any]) -> Any:
    return client().post(f"/api/v1/vfio/devices/{path}", body)


def _held_by(claim: dict[str, Any] | None) -> str | None:
    if claim is None:
        return None
    return f"vm {claim['vm_name']}" if claim.get("vm_name") else "operator"


def _device_row(device: dict[str, Any]) -> dict[str, Any]:
    held_by = _held_by(device.get("claim"))
    pci_id = f"{device['vendor']}:{device['device']}"
    return {**device, "id": pci_id, "driver": device["driver"] or None, "held_by": held_by}


@devices_app.command("info")
def devices_info(
    address: Annotated[str, typer.Argument(help="PCI address, like 0000:01:00.0")],
    output: OutputOption = Format.TABLE,
) -> None:
    """One device: ids, driver, IOMMU group, NUMA node, and the VM holding it."""
    device = _post("info", {"pci_address": address})
    emit(device if output is not Format.TABLE else _device_row(device), output, DEVICE_COLUMNS)


@devices_app.command("validate")
def devices_validate(
    addresses: Addresses,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="also require vendor:device or vendor:*"),
    ] = None,
    output: OutputOption = Format.TABLE,
) -> None:
    """Whether volantd could bind these devices now; exit status 1 with every problem if not."""
    result = _post("validate", {"pci_addresses": addresses, "allowlist": allow or []})
    if output is not Format.TABLE:
        emit(result, output)
    elif result["valid"]:
        typer.echo(result["message"])
    if not result["valid"]:
        fail("; ".join(result.get("errors") or [result["message"]]))


@devices_app.command("groups")
def devices_groups(addresses: Addresses, output: OutputOption = Format.TABLE) -> None:
    """The IOMMU groups of these devices, with every member (VFIO hands over whole groups)."""
    groups = _post("iommu-groups", {"pci_addresses": addresses})
    if output is not Format.TABLE:
        emit(groups, output)
        return
    rows = [{**_device_row(member), "group": group["id"],
             "asked": member["address"] in group["devices"]}
            for group in groups for member in group["members"]]  # fmt: skip
    emit(rows, output, [("GROUP", "group"), *DEVICE_COLUMNS[:4], ("ASKED", "asked")])


@devices_app.command("bind")
def devices_bind(addresses: Addresses, output: OutputOption = Format.TABLE) -> None:
    """Bind devices to vfio-pci (all or none); a VM that asks for one later takes it over."""
    emit(_post("bind", {"pci_addresses": addresses})["devices"], output, BINDING_COLUMNS)


@devices_app.command("unbind")
def devices_unbind(addresses: Addresses, output: OutputOption = Format.TABLE) -> None:
    """Give devices bound with `bind` back to the driver they had."""
    emit(_post("unbind", {"pci_addresses": addresses})["devices"], output, BINDING_COLUMNS)


@devices_app.command("claims")
def devices_claims(output: OutputOption = Format.TABLE) -> None:
    """Every device volantd holds, for which VM, and the driver it goes back to."""
    claims = client().get("/api/v1/vfio/claims")
    if output is not Format.TABLE:
        emit(claims, output)
        return
    emit([{**claim, "held_by": _held_by(claim)} for claim in claims], output, CLAIM_COLUMNS)
