"""Root disk images for rootfs plugins, built from a staging tree without the OCI pipeline.

A test lays out a tree (the host's static busybox with its applet links, or a dynamically
linked glibc program with its ELF closure), owns it as the image should be owned, and turns
it into an ext4 image with `mkfs.ext4 -d` or a squashfs with `mksquashfs` (no loop mount,
no root needed beyond chown).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

APP_UID = 1000
APP_GID = 1000
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    f"app:x:{APP_UID}:{APP_GID}:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = f"root:x:0:\napp:x:{APP_GID}:\nnogroup:x:65534:\n"


def require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"{tool} is required to build root disk images")
    return found


def write(root: Path, path: str, data: str | bytes, mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)
    target.chmod(mode)
    return target


def accounts(root: Path) -> None:
    """/etc/passwd and /etc/group with root, a non-root `app` (1000:1000) and nobody; and
    app's home, owned by app."""
    write(root, "/etc/passwd", PASSWD)
    write(root, "/etc/group", GROUP)
    home = root / "home/app"
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, APP_UID, APP_GID)
    (root / "root").mkdir(mode=0o700, exist_ok=True)


def busybox_tree(root: Path) -> Path:
    """The host's static busybox at /bin/busybox with a relative link per applet in /bin."""
    busybox = require("busybox")
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin/busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    return root


def elf_closure(programs: list[str]) -> list[Path]:
    """The programs, the shared libraries they need and their loader, as `ldd` lists them."""
    found: dict[str, Path] = {}
    for program in programs:
        path = Path(shutil.which(program) or program)
        found[str(path)] = path
        listing = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        for line in listing.stdout.splitlines():
            candidate = line.split("=>")[-1].strip().split(" (")[0]
            if candidate.startswith("/"):
                found[candidate] = Path(candidate)
    return list(found.values())


def glibc_tree(root: Path, programs: list[str]) -> Path:
    """`programs` (host glibc binaries) with their ELF closure at the same paths, /bin/sh
    being the host's (dash, dynamically linked); no busybox at all."""
    for path in elf_closure(programs):
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.resolve(), target)
    if not (root / "lib64").exists() and (root / "usr/lib64").exists():
        (root / "lib64").symlink_to("usr/lib64")
    return root


def make_ext4(tree: Path, image: Path, size_mb: int = 64) -> Path:
    """An ext4 filesystem image holding `tree` (owners and modes as in the tree)."""
    mkfs = require("mkfs.ext4")
    image.unlink(missing_ok=True)
    with open(image, "wb") as file:
        file.truncate(size_mb * 1024 * 1024)
    subprocess.run(
        [mkfs, "-q", "-F", "-L", "rootfs", "-E", "root_owner=0:0", "-d", str(tree), str(image)],
        check=True,
        capture_output=True,
    )
    return image


def make_squashfs(tree: Path, image: Path) -> Path:
    """A squashfs image holding `tree` (owners kept, reproducible timestamps)."""
    mksquashfs = require("mksquashfs")
    image.unlink(missing_ok=True)
    subprocess.run(
        [mksquashfs, str(tree), str(image), "-noappend", "-quiet", "-no-progress",
         "-all-time", "0", "-mkfs-time", "0"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return image


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def rootfs_manifest(
    name: str,
    image: Path,
    *,
    fstype: str = "ext4",
    workload: dict | None = None,
    expose: list[dict] | None = None,
    health_check: dict | None = None,
    memory_mb: int = 256,
) -> dict:
    """A plugin manifest booting `image` as its root disk."""
    manifest: dict = {
        "schema_version": "1.0",
        "name": name,
        "version": "1.0.0",
        "runtime": name,
        "resources": {"cpu_cores": 1, "memory_mb": memory_mb},
        "rootfs": {
            "url": str(image),
            "checksum": f"sha256:{sha256_of(image)}",
            "format": "raw",
            "fstype": fstype,
        },
    }
    if workload is not None:
        manifest["workload"] = workload
    if expose:
        manifest["network"] = {"mode": "user", "expose": expose}
    if health_check is not None:
        manifest["health_check"] = health_check
    return manifest
