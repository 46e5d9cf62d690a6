"""Turning a plugin manifest and a VM's identity into its boot media (DESIGN.md §2-3).

`guest_contract` builds the VM's `/etc/volant/vm.json`; `prepare_initrd` assembles the
boot image (the plugin's initramfs, or the volant boot initramfs for a rootfs plugin), the
kernel's modules archive and that contract into the VM's one initrd. A rootfs plugin's disk
is the guest's first virtio-blk device, `/dev/vda`, which kestrel mounts and switches to.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pluginspec import (
    AgentListen,
    GuestBoot,
    GuestDisk,
    GuestNetwork,
    GuestWorkload,
    PluginManifest,
    VMContract,
    VMIdentity,
)
from volantd.boot.initrd import assemble_initrd, vm_json_files
from volantd.errors import VolantError
from volantd.kernels import KernelEntry

# QEMU user-mode networking (slirp) always offers the guest this network.
USER_MODE_ADDRESS = "10.0.2.15"
USER_MODE_PREFIX = 24
USER_MODE_GATEWAY = "10.0.2.2"
USER_MODE_DNS = "10.0.2.3"
DEFAULT_CMDLINE = "console=ttyS0 panic=-1 quiet"
ROOT_DEVICE = "/dev/vda"
"""The root disk is the first disk the VMM attaches; the manifest's disks follow it."""
AGENT_GUEST_PORTS = (8080, 18080, 28080, 38080)
"""The agent's guest port: upstream's 8080, unless the workload uses it (many OCI images serve
on 8080), then the first of the others the workload does not use."""
FILESYSTEM_DRIVERS: dict[str, tuple[str, ...]] = {
    "squashfs": ("squashfs", "overlay"),
    "iso9660": ("isofs",),
    "vfat": ("vfat", "nls_cp437", "nls_ascii"),
}
"""Kernel drivers a filesystem needs (squashfs: kestrel's tmpfs overlay too; vfat: the
character sets a mount uses by default on the reference kernel, codepage 437 and iocharset
ascii, which the kernel would ask modprobe for, and a guest's own disk has no modules for it);
any other filesystem needs the driver of its own name (ext4 is built into the reference
kernel)."""


def mac_for(vm_id: str) -> str:
    """A stable, locally administered unicast MAC derived from the VM's id."""
    digest = hashlib.sha256(vm_id.encode()).digest()
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in digest[:3])


def kernel_cmdline(extra: str = "") -> str:
    """The guest kernel command line: console, panic behaviour, quiet, then the user's extras."""
    return f"{DEFAULT_CMDLINE} {extra}".strip()


def guest_network(mode: Literal["user", "isolated"], mac: str) -> GuestNetwork:
    """The guest side of a user-mode or isolated NIC: slirp's fixed address plan."""
    if mode not in ("user", "isolated"):
        raise VolantError(f"network mode {mode!r} needs the bridged networking driver")
    return GuestNetwork(
        mode=mode, mac=mac, address=USER_MODE_ADDRESS, prefix=USER_MODE_PREFIX,
        gateway=USER_MODE_GATEWAY, dns=[USER_MODE_DNS],
    )  # fmt: skip


def guest_contract(
    *,
    name: str,
    vm_id: str,
    manifest: PluginManifest,
    kernel: KernelEntry,
    network: GuestNetwork,
    drivers: Sequence[str] | None = None,
    console_shell: bool = True,
    boot_epoch_ns: int | None = None,
    agent_port: int | None = None,
    agent_vsock_port: int | None = None,
    extra_disks: Sequence[GuestDisk] = (),
) -> VMContract:
    """The vm.json of one VM running `manifest` on `kernel`.

    `drivers` are the guest drivers its devices need (`HypervisorDriver.guest_drivers`):
    init loads only their modules, plus the root filesystem's for a rootfs plugin; None loads
    every module the kernel ships. `agent_port`: kestrel's guest port (default:
    `agent_guest_port(manifest)`); `agent_vsock_port`: its vsock port, if the VM has vsock.
    `extra_disks` follow the manifest's (the cloud-init seed); their filesystems' drivers are
    loaded for the image to mount them.
    """
    boot = guest_boot(manifest)
    disks = [*guest_disks(manifest), *extra_disks]
    if drivers is not None:
        fstypes = [
            boot.root_fstype,
            *(disk.fstype for disk in disks if disk.mount),
            *(disk.fstype for disk in extra_disks),  # mounted by the image (cloud-init)
        ]
        for fstype in dict.fromkeys(fstype for fstype in fstypes if fstype is not None):
            drivers = (*drivers, *filesystem_drivers(fstype))
    return VMContract(
        vm=VMIdentity(name=name, id=vm_id),
        hostname=name,
        manifest=manifest,
        workload=GuestWorkload.from_manifest(manifest),
        network=network,
        agent=AgentListen(
            tcp_port=agent_port or agent_guest_port(manifest), vsock_port=agent_vsock_port
        ),
        boot=boot,
        disks=disks,
        modules=list(kernel.modules if drivers is None else kernel.modules_for(drivers)),
        console_shell=console_shell,
        boot_epoch_ns=boot_epoch_ns if boot_epoch_ns is not None else time.time_ns(),
    )


def agent_guest_port(manifest: PluginManifest, exposed: Iterable[int] = ()) -> int:
    """Where kestrel listens in the guest: 8080 unless the workload's `base_url` or one of its
    `exposed` guest ports is 8080 (then 18080, ...): a workload that wants the port must not
    find it taken by the agent."""
    taken = set(exposed)
    if manifest.workload is not None and manifest.workload.base_url:
        url = urlsplit(manifest.workload.base_url)
        taken.add(url.port or (443 if url.scheme == "https" else 80))
    return next(port for port in AGENT_GUEST_PORTS if port not in taken)


def guest_boot(manifest: PluginManifest) -> GuestBoot:
    """Stay in the plugin's initramfs, or mount the root disk (`/dev/vda`) and switch to it."""
    if manifest.rootfs is None:
        return GuestBoot(strategy="initramfs")
    return GuestBoot(strategy="rootfs", root_device=ROOT_DEVICE, root_fstype=manifest.rootfs.fstype)


def guest_disks(manifest: PluginManifest) -> list[GuestDisk]:
    """The manifest's disks as the guest sees them: after the root disk, in list order."""
    first = 0 if manifest.rootfs is None else 1
    return [
        GuestDisk(
            name=disk.name,
            device=virtio_disk_device(first + index),
            fstype=disk.fstype,
            mount=disk.mount,
            readonly=disk.read_only,
        )
        for index, disk in enumerate(manifest.disks)
    ]


def virtio_disk_device(index: int) -> str:
    """The guest's name for its ``index``-th virtio disk: /dev/vda, ..., /dev/vdz, /dev/vdaa."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"/dev/vd{letters}"


def filesystem_drivers(fstype: str) -> tuple[str, ...]:
    """The kernel drivers mounting a filesystem of `fstype` takes (a root or data disk, or a
    cloud-init seed: ``vfat``, ``iso9660``)."""
    return FILESYSTEM_DRIVERS.get(fstype, (fstype,))


def prepare_initrd(
    run_dir: Path, boot_image: Path, kernel: KernelEntry, contract: VMContract
) -> Path:
    """Write the VM's initrd: `boot_image` (the plugin's initramfs, or the volant boot
    initramfs for a rootfs plugin) + kernel modules + vm.json."""
    archives = [boot_image]
    if kernel.modules_cpio is not None:
        archives.append(kernel.modules_cpio)
    return assemble_initrd(run_dir / "initrd", archives, vm_json_files(contract))
