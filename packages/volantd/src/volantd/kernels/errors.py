"""Errors raised while provisioning, importing or loading guest kernels."""

from __future__ import annotations

from collections.abc import Sequence

from volantd.errors import VolantError


class KernelError(VolantError):
    """Base of every kernel-provisioning error."""


class KernelNotFoundError(KernelError):
    """No kernel with the requested name (or no default kernel) is installed."""


class KernelIntegrityError(KernelError):
    """An installed kernel's files no longer match the digests recorded at install time."""


class KernelImageError(KernelError):
    """A file given as a kernel image is missing or is neither a bzImage nor a vmlinux."""


class ModuleInfoError(KernelError):
    """A kernel module file could not be read (not an ELF object, no `.modinfo`, bad data)."""


class ModuleResolutionError(KernelError):
    """A wanted module, or one of its dependencies, is neither a module file nor built in."""


class DependencyCycleError(KernelError):
    """Module dependencies form a cycle, so no load order exists."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        super().__init__(f"module dependency cycle: {' -> '.join(self.cycle)}")


class PackageFetchError(KernelError):
    """apt could not resolve or download the reference kernel package."""
