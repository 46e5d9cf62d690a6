"""Turning a plugin manifest and a VM's identity into its boot media (DESIGN.md §2-3).

`guest_contract` builds the VM's `/etc/volant/vm.json`; `prepare_initrd` assembles the
plugin's initramfs, the kernel's modules archive and that contract into the VM's one initrd.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pluginspec import (
    GuestBoot,
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
) -> VMContract:
    """The vm.json of one VM running `manifest` on `kernel`.

    `drivers` are the guest drivers its devices need (`HypervisorDriver.guest_drivers`):
    init loads only their modules; None loads every module the kernel ships.
    """
    if manifest.rootfs is not None:
        raise VolantError(
            f"plugin {manifest.name} boots from a root disk; rootfs plugins land with the OCI "
            "rootfs work — use an initramfs plugin"
        )
    return VMContract(
        vm=VMIdentity(name=name, id=vm_id),
        hostname=name,
        manifest=manifest,
        workload=GuestWorkload.from_manifest(manifest),
        network=network,
        boot=GuestBoot(strategy="initramfs"),
        modules=list(kernel.modules if drivers is None else kernel.modules_for(drivers)),
        console_shell=console_shell,
        boot_epoch_ns=boot_epoch_ns if boot_epoch_ns is not None else time.time_ns(),
    )


def prepare_initrd(
    run_dir: Path, plugin_initramfs: Path, kernel: KernelEntry, contract: VMContract
) -> Path:
    """Write the VM's initrd: plugin initramfs + kernel modules + vm.json."""
    archives = [plugin_initramfs]
    if kernel.modules_cpio is not None:
        archives.append(kernel.modules_cpio)
    return assemble_initrd(run_dir / "initrd", archives, vm_json_files(contract))
