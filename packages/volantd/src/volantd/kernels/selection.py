"""Which modules a volant guest needs from a kernel, with their dependencies, in load order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from volantd.kernels.errors import ModuleResolutionError
from volantd.kernels.modinfo import normalise_module_name
from volantd.kernels.moduletree import KernelModule, ModuleIndex
from volantd.kernels.ordering import order_modules


@dataclass(frozen=True)
class WantedModule:
    """A driver the guest needs, as a module or built in; `purpose` explains it in errors."""

    name: str
    purpose: str
    optional: bool = False


GUEST_MODULES: tuple[WantedModule, ...] = (
    WantedModule("virtio_mmio", "virtio-mmio devices (QEMU microvm)"),
    WantedModule("virtio_pci", "virtio-pci devices (Cloud Hypervisor, QEMU q35/pc machines)"),
    WantedModule("virtio_net", "the guest network interface"),
    WantedModule("virtio_blk", "root and data disks"),
    WantedModule("virtio_console", "the virtio console"),
    WantedModule("virtio_rng", "guest entropy from the host", optional=True),
    WantedModule("vsock", "the agent's vsock channel"),
    WantedModule("vmw_vsock_virtio_transport", "the agent's vsock channel over virtio"),
    WantedModule("overlay", "overlay root filesystems"),
    WantedModule("squashfs", "squashfs images"),
    WantedModule("ext4", "ext4 root disks"),
    # cloud-init seeds; optional: a kernel without them boots every VM that has no seed.
    WantedModule("isofs", "iso9660 cloud-init seeds", optional=True),
    WantedModule("vfat", "vfat cloud-init seeds", optional=True),
    WantedModule("nls_cp437", "vfat file names (codepage 437, Debian's default)", optional=True),
    WantedModule("nls_ascii", "vfat file names (iocharset ascii, Debian's default)", optional=True),
)


@dataclass(frozen=True)
class ModuleSelection:
    """The modules to ship, in load order, and what was found built in or absent."""

    modules: tuple[KernelModule, ...]
    builtin: tuple[str, ...]  # wanted or depended on, but compiled into the kernel
    absent_optional: tuple[str, ...]
    needs: dict[str, tuple[str, ...]]  # module name -> selected modules loaded before it


def _missing_message(index: ModuleIndex, name: str) -> str:
    message = f"{index.origin} has neither a {name} module file nor a built-in {name}"
    if not index.has_builtin_list:
        message += " (it has no modules.builtin, so built-in drivers cannot be recognised)"
    return message


def select_modules(
    index: ModuleIndex, wanted: Sequence[WantedModule] = GUEST_MODULES
) -> ModuleSelection:
    """The `wanted` modules plus everything they depend on (`depends` and `softdep pre:`).

    Built-in modules are skipped. A required module that is neither a module nor built in,
    or a hard dependency that cannot be found, raises ModuleResolutionError; a pre-softdep
    that cannot be found is skipped, as modprobe does.
    """
    selected: dict[str, KernelModule] = {}
    needs: dict[str, set[str]] = {}
    builtin: set[str] = set()
    absent: list[str] = []

    def softdep_targets(name: str) -> list[str]:
        normalised = normalise_module_name(name)
        if normalised in index.modules:
            return [normalised]
        providers = index.aliases.get(name, ())
        if normalised in index.builtin or any(p in index.builtin for p in providers):
            return []
        return [provider for provider in providers if provider in index.modules]

    def include(name: str, needed_by: str) -> None:
        if name in selected or name in builtin:
            return
        if name in index.builtin:
            builtin.add(name)
            return
        module = index.modules.get(name)
        if module is None:
            raise ModuleResolutionError(
                f"module {needed_by} depends on {name}, but {_missing_message(index, name)}"
            )
        selected[name] = module
        needs[name] = set()
        for dependency in module.depends:
            include(dependency, name)
            if dependency in selected:
                needs[name].add(dependency)
        for soft in module.softdep_pre:
            for target in softdep_targets(soft):
                include(target, name)
                needs[name].add(target)

    for want in wanted:
        name = normalise_module_name(want.name)
        if name in index.modules or name in index.builtin:
            include(name, name)
        elif want.optional:
            absent.append(name)
        else:
            raise ModuleResolutionError(
                f"{_missing_message(index, name)}; volant guests need it for {want.purpose}, "
                "so use a kernel that has it (as a module or built in)"
            )

    order = order_modules(needs)
    return ModuleSelection(
        modules=tuple(selected[name] for name in order),
        builtin=tuple(sorted(builtin)),
        absent_optional=tuple(absent),
        needs={name: tuple(sorted(needs[name])) for name in order},
    )
