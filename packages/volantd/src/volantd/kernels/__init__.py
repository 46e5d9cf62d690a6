"""Guest kernels: the Debian reference kernel, imported kernels, and their modules cpio."""

from volantd.kernels.errors import (
    DependencyCycleError,
    KernelError,
    KernelImageError,
    KernelIntegrityError,
    KernelNotFoundError,
    ModuleInfoError,
    ModuleResolutionError,
    PackageFetchError,
)
from volantd.kernels.image import ImageFormat, KernelImage, inspect_kernel_image
from volantd.kernels.ordering import order_modules
from volantd.kernels.selection import GUEST_MODULES, ModuleSelection, select_modules
from volantd.kernels.store import KernelEntry, KernelSource, KernelStore, StoredFile

__all__ = [
    "GUEST_MODULES",
    "DependencyCycleError",
    "ImageFormat",
    "KernelEntry",
    "KernelError",
    "KernelImage",
    "KernelImageError",
    "KernelIntegrityError",
    "KernelNotFoundError",
    "KernelSource",
    "KernelStore",
    "ModuleInfoError",
    "ModuleResolutionError",
    "ModuleSelection",
    "PackageFetchError",
    "StoredFile",
    "inspect_kernel_image",
    "order_modules",
    "select_modules",
]
