"""The volant boot initramfs that rootfs plugins boot with, built once per host and cached.

Built by fledge (``fledge.bootimage``) from this installation's C init, kestrel and the host
interpreter, and kept as ``<cache>/boot-initramfs/<key>.cpio`` (uncompressed: it is copied
into each VM's initrd as is). The key changes whenever one of those inputs does, so an
upgraded volantd builds a fresh image on its first rootfs VM and removes the old one. Builds
are atomic (written beside the target, then renamed) and serialised by a lock file, so
concurrent starts, or two daemons sharing a cache, build it once.
"""

from __future__ import annotations

import fcntl
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from volantd.errors import VolantError

log = logging.getLogger("volantd.boot")

BOOT_IMAGE_DIR = "boot-initramfs"
LOCK_NAME = ".lock"


class BootImageError(VolantError):
    """The boot initramfs for rootfs plugins could not be built."""


@dataclass(frozen=True)
class BootInitramfs:
    """The cached image, and how long this call spent building it (0 when it was cached)."""

    path: Path
    key: str
    built_s: float = 0.0

    @property
    def built(self) -> bool:
        return self.built_s > 0


def boot_image_dir(cache_root: Path) -> Path:
    return cache_root / BOOT_IMAGE_DIR


def ensure_boot_initramfs(cache_root: Path, *, rebuild: bool = False) -> BootInitramfs:
    """The boot initramfs under ``cache_root`` (volantd's cache), built first if needed."""
    from fledge import FledgeError
    from fledge.bootimage import boot_image_key, build_boot_image

    folder = boot_image_dir(cache_root)
    try:
        key = boot_image_key()
    except FledgeError as error:
        raise BootImageError(f"cannot describe the boot initramfs: {error}") from None
    target = folder / f"{key}.cpio"
    if target.is_file() and not rebuild:
        return BootInitramfs(target, key)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and not rebuild:  # another builder finished while we waited
            return BootInitramfs(target, key)
        log.info("building the boot initramfs for rootfs plugins (%s)", target)
        started = time.monotonic()
        try:
            build_boot_image(target)
        except FledgeError as error:
            raise BootImageError(f"building the boot initramfs failed: {error}") from None
        built_s = max(time.monotonic() - started, 1e-6)
        log.info("boot initramfs built in %.1f s: %s", built_s, target)
        for stale in folder.glob("*.cpio"):
            if stale != target:
                stale.unlink(missing_ok=True)
        return BootInitramfs(target, key, built_s)


def boot_initramfs(cache_root: Path) -> Path:
    """Path of the boot initramfs under ``cache_root``, built first if needed."""
    return ensure_boot_initramfs(cache_root).path
