"""Which host PCI devices volantd may take, who holds them, and giving them back.

The rules (docs/devices.md):

- a device is taken only if the host's allow-list (``VOLANT_VFIO_ALLOWLIST``) names it (empty:
  passthrough is off), and the request's own allow-list too, if it has one;
- VFIO hands whole IOMMU groups to one VM: every other device of the group must be passed
  too, or have no driver, or be on vfio-pci/pci-stub unclaimed by another VM; bridges are
  exempt (the kernel allows them in a group used by VFIO) and are never passed themselves;
- each device taken is claimed in the store (holder, original driver) before it is bound, so
  a failed start, a stop, a crash, a delete or the next daemon start gives it back to the
  driver it had; a device claimed by one VM is refused to every other (409 naming it).

Methods that touch sysfs block: the orchestrator and the API call them off the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from volantd.devices.errors import (
    DeviceConflictError,
    DeviceError,
    DeviceNotAllowedError,
    InvalidDeviceError,
)
from volantd.devices.pci import AllowList, parse_address, parse_addresses
from volantd.devices.sysfs import PciDevice, Sysfs
from volantd.devices.vfio import VFIO_DRIVER, VfioBinder
from volantd.store import Database, DeviceClaim

log = logging.getLogger("volantd.devices")

GROUP_SAFE_DRIVERS = (VFIO_DRIVER, "pci-stub")
"""Drivers whose devices do not stop the rest of their IOMMU group from going to a VM."""
HOST_ALLOWLIST = "VOLANT_VFIO_ALLOWLIST"


@dataclass(frozen=True)
class IommuGroup:
    """IOMMU group `id`: the `requested` addresses in it, and every one of its `members`."""

    id: int
    requested: tuple[str, ...]
    members: tuple[PciDevice, ...]


@dataclass(frozen=True)
class Binding:
    """Where a bind or unbind left `address`: its `driver` now and the `original_driver`
    volantd gives it back to."""

    address: str
    driver: str | None
    original_driver: str | None


class DeviceManager:
    """Host PCI devices for VMs (VFIO), with their claims in the store."""

    def __init__(
        self, db: Database, sysfs: Sysfs | None = None, allowlist: AllowList | None = None
    ) -> None:
        self.db = db
        self.sysfs = sysfs or Sysfs()
        self.allowlist = allowlist or AllowList(deny_when_empty=True)
        """The host's allow-list: an empty one allows nothing."""
        self.binder = VfioBinder(self.sysfs)
        self._lock = threading.Lock()  # one sysfs change (and its claim) at a time

    # -- reading ----------------------------------------------------------------------------

    def info(self, address: str) -> tuple[PciDevice, DeviceClaim | None]:
        """The device at `address` and its claim, if volantd holds it."""
        address = parse_address(address)
        return self.sysfs.device(address), self.db.device_claims.find(address)

    def groups(self, addresses: Iterable[str]) -> list[IommuGroup]:
        """The IOMMU groups of `addresses`, by id, with all their members."""
        requested: dict[int, list[str]] = {}
        for address in parse_addresses(addresses):
            requested.setdefault(self._group_of(self.sysfs.device(address)), []).append(address)
        return [
            IommuGroup(
                group,
                tuple(requested[group]),
                tuple(self.sysfs.device(member) for member in self.sysfs.group_members(group)),
            )
            for group in sorted(requested)
        ]

    def paths(self, addresses: Iterable[str]) -> list[Path]:
        """The sysfs folders of devices on vfio-pci, as Cloud Hypervisor's ``--device
        path=`` takes them (upstream's "group paths")."""
        paths = []
        for address in parse_addresses(addresses):
            device = self.sysfs.device(address)
            if device.driver != VFIO_DRIVER:
                raise DeviceConflictError(
                    f"{device.describe()} is not bound to vfio-pci; bind it first"
                )
            paths.append(self.sysfs.device_path(address))
        return paths

    # -- checking ---------------------------------------------------------------------------

    def check(
        self, addresses: Iterable[str], *, holder: str | None, allowlist: AllowList | None = None
    ) -> list[PciDevice]:
        """The devices at `addresses` if `holder` (a VM name, None: an operator) may take
        them all; else the first problem, raised."""
        devices: list[PciDevice] = []
        for problem in self._problems(addresses, holder, allowlist, devices):
            raise problem
        return devices

    def problems(self, addresses: Iterable[str], allowlist: AllowList | None = None) -> list[str]:
        """Every reason an operator could not bind `addresses` now (none: they can be)."""
        return [str(problem) for problem in self._problems(addresses, None, allowlist, [])]

    def _problems(
        self,
        texts: Iterable[str],
        holder: str | None,
        allowlist: AllowList | None,
        devices: list[PciDevice],
    ) -> Iterator[DeviceError]:
        """Each problem in turn; `devices` collects the devices that have none of their own."""
        addresses: list[str] = []
        for text in texts:
            try:
                address = parse_address(text)
            except DeviceError as problem:
                yield problem
                continue
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            yield InvalidDeviceError("no PCI address given")
        for address in addresses:
            try:
                device = self.sysfs.device(address)
                self._check_device(device, holder, allowlist)
            except DeviceError as problem:
                yield problem
                continue
            devices.append(device)
        yield from self._group_problems(devices, holder)

    def _check_device(
        self, device: PciDevice, holder: str | None, allowlist: AllowList | None
    ) -> None:
        if device.is_bridge:
            raise InvalidDeviceError(
                f"{device.describe()} is a PCI bridge: bridges stay with the host; pass the "
                "devices behind it"
            )
        if not self.allowlist.permits(device.vendor, device.device):
            raise DeviceNotAllowedError(self._not_allowed(device))
        if allowlist is not None and not allowlist.permits(device.vendor, device.device):
            raise InvalidDeviceError(
                f"{device.describe()} is not in the allow-list given with the devices "
                f"({', '.join(allowlist.entries)})"
            )
        self._group_of(device)
        claim = self.db.device_claims.find(device.address)
        if claim is not None and claim.vm_name is not None and claim.vm_name != holder:
            raise DeviceConflictError(
                f"PCI device {device.address} is claimed by {claim.holder}; stop or delete "
                "that VM first"
            )

    def _not_allowed(self, device: PciDevice) -> str:
        message = f"{device.describe()} is not in volantd's VFIO allow-list"
        if not self.allowlist.entries:
            return (
                f"{message}: {HOST_ALLOWLIST} is empty, so passthrough is off until an operator "
                f"lists the devices volantd may take from the host, e.g. "
                f"{HOST_ALLOWLIST}={device.pci_id} (or {device.vendor}:*)"
            )
        return (
            f"{message} ({', '.join(self.allowlist.entries)}); an operator can add "
            f"{device.pci_id} to {HOST_ALLOWLIST}"
        )

    def _group_problems(
        self, devices: list[PciDevice], holder: str | None
    ) -> Iterator[DeviceConflictError]:
        requested = {device.address for device in devices}
        seen: set[int] = set()
        for device in devices:
            group = self._group_of(device)
            if group in seen:
                continue
            seen.add(group)
            for address in self.sysfs.group_members(group):
                if address in requested:
                    continue
                member = self.sysfs.device(address)
                claim = self.db.device_claims.find(address)
                if claim is not None and claim.vm_name is not None and claim.vm_name != holder:
                    yield DeviceConflictError(
                        f"{device.address} shares IOMMU group {group} with {address}, which "
                        f"{claim.holder} holds: a group goes to one VM only"
                    )
                elif not (member.is_bridge or member.driver in (None, *GROUP_SAFE_DRIVERS)):
                    yield DeviceConflictError(
                        f"{device.address} shares IOMMU group {group} with "
                        f"{member.describe()}: VFIO passes whole groups, so pass "
                        f"{address} too or unbind it from {member.driver} first"
                    )

    def _group_of(self, device: PciDevice) -> int:
        if device.iommu_group is None:
            raise DeviceConflictError(
                f"{device.address} has no IOMMU group: the host's IOMMU is off or missing; "
                "enable VT-d/AMD-Vi in the firmware and boot the host with intel_iommu=on "
                "(or amd_iommu=on)"
            )
        return device.iommu_group

    # -- VMs --------------------------------------------------------------------------------

    def acquire(
        self, vm: str, addresses: Iterable[str], allowlist: AllowList | None = None
    ) -> tuple[Path, ...]:
        """Check, claim for `vm` and bind to vfio-pci every device of `addresses`; returns
        their sysfs folders for the VMM. On any failure whatever `vm` holds is given back."""
        with self._lock:
            devices = self.check(addresses, holder=vm, allowlist=allowlist)
            try:
                self.db.device_claims.claim(vm, {d.address: d.driver for d in devices})
                for device in devices:
                    self.binder.bind(device.address)
            except BaseException:
                self._give_back_all(vm)
                raise
            return tuple(self.sysfs.device_path(device.address) for device in devices)

    def release(self, vm: str) -> list[str]:
        """Give every device `vm` holds back to its original driver and drop its claim; the
        claims of devices that could not be given back stay (retried on the next release or
        daemon start). Returns what went wrong, if anything."""
        with self._lock:
            return self._give_back_all(vm)

    def reconcile(self, running: Collection[str]) -> int:
        """Daemon start: give back the devices of VMs that are not `running` (stopped while
        volantd was down, or deleted); operators' claims stay. Returns how many."""
        given = 0
        with self._lock:
            for claim in self.db.device_claims.all():
                if claim.vm_name is None or claim.vm_name in running:
                    continue
                if self._give_back(claim) is None:
                    given += 1
        return given

    def _give_back_all(self, vm: str) -> list[str]:
        problems = []
        for claim in self.db.device_claims.held_by(vm):
            problem = self._give_back(claim)
            if problem is not None:
                problems.append(problem)
        return problems

    def _give_back(self, claim: DeviceClaim) -> str | None:
        try:
            self.binder.give_back(claim.address, claim.original_driver)
        except DeviceError as error:
            log.warning("PCI device %s of %s stays claimed: %s", claim.address, claim.holder,
                        error)  # fmt: skip
            return str(error)
        self.db.device_claims.release(claim.address)
        return None

    # -- operators --------------------------------------------------------------------------

    def bind(self, addresses: Iterable[str]) -> list[Binding]:
        """Bind devices to vfio-pci for an operator (the API): the same rules as for a VM,
        claimed with no VM; a VM that asks for one later takes it over."""
        with self._lock:
            devices = self.check(addresses, holder=None)
            held = {claim.address for claim in self.db.device_claims.held_by(None)}
            claims = self.db.device_claims.claim(None, {d.address: d.driver for d in devices})
            try:
                for device in devices:
                    self.binder.bind(device.address)
            except BaseException:
                for claim in claims:
                    if claim.address not in held:
                        self._give_back(claim)
                raise
            return [
                Binding(claim.address, self.sysfs.driver_of(claim.address), claim.original_driver)
                for claim in claims
            ]

    def unbind(self, addresses: Iterable[str]) -> list[Binding]:
        """Give devices an operator bound back to the driver they had. A device no VM or
        operator claimed and not on vfio-pci is left as it is; one a VM holds, or one bound
        to vfio-pci outside volantd, is refused."""
        with self._lock:
            targets: list[tuple[str, DeviceClaim | None]] = []
            for address in parse_addresses(addresses):
                device = self.sysfs.device(address)
                claim = self.db.device_claims.find(address)
                if claim is not None and claim.vm_name is not None:
                    if self.db.vms.find(claim.vm_name) is not None:
                        raise DeviceConflictError(
                            f"PCI device {address} is held by {claim.holder}; stop or delete "
                            "the VM and volantd gives it back to the host"
                        )
                elif claim is None and device.driver == VFIO_DRIVER:
                    raise DeviceConflictError(
                        f"{device.describe()} was bound outside volantd, which only gives back "
                        "devices it bound itself"
                    )
                targets.append((address, claim))
            results = []
            for address, claim in targets:
                original = claim.original_driver if claim is not None else None
                if claim is not None:
                    self.binder.give_back(address, original)
                    self.db.device_claims.release(address)
                results.append(Binding(address, self.sysfs.driver_of(address), original))
            return results
