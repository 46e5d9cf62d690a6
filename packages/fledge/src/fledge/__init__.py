"""fledge: builds Volant plugin images (initramfs appliances and OCI root disks)."""

__version__ = "0.1.0"

from .archive import ArchiveMember, read_archive
from .errors import FledgeError
from .initc import build_init
from .initramfs import (
    BuildOptions,
    BuildProgress,
    BuildResult,
    InitramfsBuilder,
    build,
    load_config,
)
from .rootfs.builder import PullOptions, RootfsBuilder, RootfsBuildResult

__all__ = [
    "ArchiveMember",
    "BuildOptions",
    "BuildProgress",
    "BuildResult",
    "FledgeError",
    "InitramfsBuilder",
    "PullOptions",
    "RootfsBuildResult",
    "RootfsBuilder",
    "__version__",
    "build",
    "build_init",
    "load_config",
    "read_archive",
]
