"""The volant boot initramfs: what rootfs plugins boot with (DESIGN.md §2-3, docs/guest.md).

A rootfs plugin brings a disk image, not an initramfs; its VMs boot the same small image
whatever the plugin: the C init (``csrc/init.c``), the kestrel zipapp and the guest Python
runtime, in the layout of every default-mode initramfs (``/init``, ``/opt/volant/kestrel.pyz``,
``/opt/volant/python``), plus the skeleton and the empty ``/newroot`` where kestrel mounts the
root disk before it switches root. No busybox: after the switch the image's own programs
(its ``/bin/sh`` for the console shell) are what the guest has.

The image depends only on this Volant installation and the host interpreter, never on a
plugin, so a host builds it once per :func:`boot_image_key` (volantd caches it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import time
from dataclasses import dataclass
from pathlib import Path

from pluginspec.cpio import CpioEntry, compress, cpio_bytes

from . import __version__
from .agent import AGENT_PATH, bundled_agent
from .cache import default_cache_dir
from .initc import build_init, find_csrc
from .initramfs import INIT_PATH, _write_atomically
from .runtime import GUEST_PYTHON, python_runtime_entries
from .skeleton import skeleton_entries
from .tree import ImageTree

BOOT_IMAGE_FORMAT = 1
"""Bumped whenever the layout below changes, so cached images of the old layout are rebuilt."""
ROOT_MOUNT_POINT = "/newroot"
"""Where kestrel's stage 1 mounts the root disk (kestrel.rootfs.ROOT_MOUNT_POINT)."""


@dataclass(frozen=True)
class BootImage:
    """A written boot initramfs."""

    path: Path
    key: str
    size: int
    entries: int
    duration_s: float


def _sources_digest(folder: Path, suffixes: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _kestrel_identity() -> str:
    """The agent's sources and its bundled wheels: what the zipapp is built from."""
    import kestrel

    folder = Path(kestrel.__file__).resolve().parent
    versions = []
    for name in ("kestrel", "h11"):
        try:
            versions.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name}=?")
    return ",".join(versions) + ":" + _sources_digest(folder, (".py",))


def _runtime_identity(python: str) -> str:
    """The interpreter file (path, size, mtime) and the code that packs it."""
    import shutil

    from . import runtime

    found = shutil.which(python) or python
    interpreter = Path(found).resolve()
    try:
        status = interpreter.stat()
        stamp = f"{interpreter}:{status.st_size}:{status.st_mtime_ns}"
    except OSError:
        stamp = f"{interpreter}:missing"
    return stamp + ":" + hashlib.sha256(Path(runtime.__file__).read_bytes()).hexdigest()


def boot_image_key(python: str = GUEST_PYTHON) -> str:
    """What the boot image of this installation is built from, as a short hex digest.

    Covers fledge's version, this module, the kestrel sources (hence its zipapp), the runtime's
    interpreter and packer, and the C init's sources. Cheap: nothing is built or compiled.
    """
    parts = [
        f"format={BOOT_IMAGE_FORMAT}",
        f"fledge={__version__}",
        hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        _kestrel_identity(),
        _runtime_identity(python),
        _sources_digest(find_csrc(), (".c", ".h")),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def boot_image_entries(
    python: str = GUEST_PYTHON, cache_dir: Path | None = None
) -> list[CpioEntry]:
    """Every entry of the boot initramfs (``cache_dir``: fledge's build cache)."""
    cache = cache_dir or default_cache_dir()
    tree = ImageTree()
    tree.add_all(skeleton_entries(), "skeleton")
    tree.add(CpioEntry.directory(ROOT_MOUNT_POINT), "boot image")
    tree.add(CpioEntry.file(INIT_PATH, build_init(cache).read_bytes(), 0o755), "init.c")
    tree.add(CpioEntry.file(AGENT_PATH, bundled_agent(python), 0o644), "bundled kestrel")
    tree.add_all(python_runtime_entries(python, cache_dir=cache), "python runtime")
    return tree.entries()


def build_boot_image(
    destination: Path,
    *,
    python: str = GUEST_PYTHON,
    cache_dir: Path | None = None,
    compression: str = "none",
) -> BootImage:
    """Write the boot initramfs to ``destination`` (atomically); ``compression`` as for
    plugin images (``none``: volantd copies it into each VM's initrd as is)."""
    started = time.monotonic()
    key = boot_image_key(python)
    entries = boot_image_entries(python, cache_dir)
    data = compress(cpio_bytes(entries), compression)
    _write_atomically(destination, data)
    return BootImage(destination, key, len(data), len(entries), time.monotonic() - started)
