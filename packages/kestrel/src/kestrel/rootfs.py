"""Stage 1 of the rootfs strategy: mount the root disk, move in, switch root, exec stage 2.

A rootfs plugin boots the volant boot initramfs (docs/guest.md): the C init execs kestrel
from the initramfs, and kestrel, seeing ``boot.strategy = "rootfs"`` in ``vm.json``:

1. waits for ``boot.root_device`` (``/dev/vda``) to appear (its driver was loaded by init);
2. mounts it on ``/newroot``: read-write for ext4, xfs and btrfs; a squashfs read-only, under
   an overlayfs whose upper layer is a tmpfs (writes last until power-off);
3. creates the mount points the image lacks (``/dev``, ``/proc``, ``/sys``, ``/run``; they
   land on the VM's own root disk, never on the shared image) and copies the image's ``/run``
   into the initramfs's ``/run`` tmpfs, which becomes the new root's ``/run``: nothing of the
   image is hidden behind it;
4. places itself under ``/run/volant`` in that tmpfs: ``kestrel.pyz`` and ``vm.json`` copied,
   the Python runtime bind-mounted read-only from the initramfs (no copy: the initramfs stays
   in memory under the new root anyway, so a copy would only cost boot time and RAM);
5. bind-mounts ``/run/volant/resolv.conf`` (the image's file as a start) over
   ``/etc/resolv.conf``, so the DNS servers stage 2 writes never reach the disk;
6. moves ``/dev``, ``/proc``, ``/sys`` and ``/run`` into the new root, makes it ``/``
   (``mount --move``, ``chroot``) and execs the runtime's interpreter on kestrel again, with
   ``VOLANT_STAGE=2``: stage 2 is the ordinary boot (network, workload, API), reading
   ``/run/volant/vm.json``, with the image's ``/etc/passwd`` and programs.

The agent writes nothing to the disk but those mount points. Any failure is a
:class:`RootfsError` whose message says what to do; as PID 1, kestrel prints it on the
console, emits ``boot_failed`` and powers off.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Callable, Mapping
from typing import NamedTuple, NoReturn

from .config import Boot
from .console import Console
from .errors import KestrelError
from .system import (
    MNT_DETACH,
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
    DeviceWaitError,
    unmount,
    wait_for_block_device,
)
from .system import mount as _mount

ROOT_MOUNT_POINT = "/newroot"
RUNTIME_DIR = "/run/volant"
"""Where kestrel lives inside the new root (a tmpfs: the moved ``/run``)."""
STAGE2_CONFIG = f"{RUNTIME_DIR}/vm.json"
STAGE_ENV = "VOLANT_STAGE"
ROOT_MOUNTED_ENV = "VOLANT_ROOT_MOUNTED_MS"
ROOT_DEVICE_TIMEOUT_S = 10.0
LOADER_NAME = "ld-linux-x86-64.so.2"
STAGE1_RUNTIME = "/opt/volant/python"
STAGE1_AGENT = "/opt/volant/kestrel.pyz"
MOVED_MOUNTS = ("/dev", "/proc", "/sys", "/run")
MOUNT_POINT_MODES = {"/dev": 0o755, "/proc": 0o555, "/sys": 0o555, "/run": 0o755}
PASSED_ENV = ("PATH", "HOME", "TERM", "VOLANT_INIT_STARTED_MS")

MountFunction = Callable[[str | None, str, str | None, int, str | None], None]


class RootfsError(KestrelError):
    """The root disk could not be mounted or switched to."""


class Mount(NamedTuple):
    """One ``mount(2)`` call, and the directories to create inside it afterwards."""

    source: str
    target: str
    fstype: str
    flags: int = 0
    data: str | None = None
    then_make: tuple[str, ...] = ()


def is_stage2(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this kestrel was exec'd by stage 1 after the switch to the root disk."""
    return (os.environ if environ is None else environ).get(STAGE_ENV) == "2"


def root_mounted_ms(environ: Mapping[str, str] | None = None) -> int | None:
    """Guest uptime when stage 1 had the root disk mounted (stage 2 only)."""
    value = (os.environ if environ is None else environ).get(ROOT_MOUNTED_ENV, "")
    return int(value) if value.isdigit() else None


def root_mounts(
    device: str, fstype: str, root: str = ROOT_MOUNT_POINT, layers: str = f"{RUNTIME_DIR}/root"
) -> list[Mount]:
    """The mounts that make ``device`` the new root at ``root``, in order.

    A squashfs is read-only: it becomes the lower layer of an overlayfs whose upper layer is
    a tmpfs (half the guest's RAM at most, the tmpfs default), both kept under ``layers``.
    """
    if fstype != "squashfs":
        return [Mount(device, root, fstype)]
    lower, writable = f"{layers}/lower", f"{layers}/rw"
    return [
        Mount(device, lower, "squashfs", MS_RDONLY),
        Mount(
            "tmpfs",
            writable,
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            "mode=0755",
            then_make=(f"{writable}/upper", f"{writable}/work"),
        ),
        Mount(
            "overlay",
            root,
            "overlay",
            0,
            f"lowerdir={lower},upperdir={writable}/upper,workdir={writable}/work",
        ),
    ]


def wait_for_device(path: str, timeout_s: float, poll_s: float = 0.01) -> float:
    """Wait until ``path`` is a block device; the seconds waited. RootfsError on timeout."""
    try:
        return wait_for_block_device(path, timeout_s, poll_s)
    except DeviceWaitError as error:
        if error.appeared:
            raise RootfsError(f"root device {path} exists but is not a block device") from None
        raise RootfsError(
            f"root device {path} did not appear within {timeout_s:g} s: the VM has no root "
            "disk attached, or the kernel has no driver for it (virtio_blk not loaded?)"
        ) from None


def mount_error(step: Mount, error: OSError) -> RootfsError:
    """What a failed root mount means, in words an operator can act on."""
    what = f"cannot mount {step.source} ({step.fstype}) on {step.target}"
    if error.errno == errno.ENODEV:
        hint = f"the kernel has no {step.fstype} driver (module not loaded or not built)"
    elif error.errno in (errno.EINVAL, errno.EUCLEAN, errno.EIO):
        hint = (
            f"{step.source} does not hold a valid {step.fstype} filesystem: check the image's "
            "fstype in the plugin manifest, or rebuild the image"
        )
    elif error.errno in (errno.ENOENT, errno.ENXIO, errno.ENOTBLK):
        hint = f"no usable device {step.source}"
    else:
        hint = error.strerror or str(error)
    return RootfsError(f"{what}: {hint} ({errno.errorcode.get(error.errno or 0, error.errno)})")


def mount_root(steps: list[Mount], mount: MountFunction = _mount) -> None:
    """Carry out ``steps`` (from :func:`root_mounts`), creating each mount point first."""
    for step in steps:
        os.makedirs(step.target, exist_ok=True)
        try:
            mount(step.source, step.target, step.fstype, step.flags, step.data)
        except OSError as error:
            raise mount_error(step, error) from None
        for folder in step.then_make:
            os.makedirs(folder, mode=0o755, exist_ok=True)


def make_mount_points(root: str, report: Callable[[str], None]) -> None:
    """Create the mount points for :data:`MOVED_MOUNTS` the image lacks (reported)."""
    for point in MOVED_MOUNTS:
        path = root + point
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            raise RootfsError(
                f"the image's {point} is not a directory; kestrel mounts the guest's {point} "
                "there: make it an empty directory in the image"
            )
        if not os.path.exists(path):
            try:
                os.mkdir(path, MOUNT_POINT_MODES[point])
            except OSError as error:
                raise RootfsError(
                    f"the image has no {point} and it cannot be created on the root disk: "
                    f"{error.strerror or error}"
                ) from None
            os.chmod(path, MOUNT_POINT_MODES[point])
            report(f"the image has no {point}: created it on the VM's root disk")


def copy_tree(source: str, target: str) -> int:
    """Copy the files, folders and symlinks under ``source`` into ``target`` (which exists),
    with their modes and owners; sockets, pipes and device nodes are skipped. Returns how
    many entries were copied."""
    copied = 0
    with os.scandir(source) as entries:
        for entry in entries:
            there = os.path.join(target, entry.name)
            info = entry.stat(follow_symlinks=False)
            if entry.is_symlink():
                if not os.path.lexists(there):
                    os.symlink(os.readlink(entry.path), there)
            elif entry.is_dir(follow_symlinks=False):
                os.makedirs(there, exist_ok=True)
                copied += copy_tree(entry.path, there)
                os.chmod(there, stat.S_IMODE(info.st_mode))
            elif entry.is_file(follow_symlinks=False):
                _copy_file(entry.path, there, stat.S_IMODE(info.st_mode))
            else:
                continue
            os.chown(there, info.st_uid, info.st_gid, follow_symlinks=False)
            copied += 1
    return copied


def _copy_file(source: str, target: str, mode: int) -> None:
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(1 << 20):
            writer.write(chunk)
    os.chmod(target, mode)


def place_resolv_conf(root: str, runtime_dir: str, report: Callable[[str], None]) -> str | None:
    """Prepare ``runtime_dir/resolv.conf`` (the image's file as a start) to be bind-mounted
    over the image's ``/etc/resolv.conf``; returns the mount target, or None to leave it.

    A symlink is left alone (stage 2 writes through it, as a resolver would). A missing file
    is created empty, as a mount point, on the VM's root disk (reported).
    """
    etc, path = f"{root}/etc", f"{root}/etc/resolv.conf"
    if os.path.islink(etc) or (os.path.lexists(etc) and not os.path.isdir(etc)):
        report("the image's /etc is not a directory: /etc/resolv.conf left alone")
        return None
    if os.path.islink(path):
        return None
    if os.path.lexists(path) and not os.path.isfile(path):
        report("the image's /etc/resolv.conf is not a file: left alone")
        return None
    runtime_copy = f"{runtime_dir}/resolv.conf"
    content = b""
    if os.path.exists(path):
        with open(path, "rb") as image_file:
            content = image_file.read()
    else:
        try:
            os.makedirs(etc, mode=0o755, exist_ok=True)
            with open(path, "xb"):
                pass
            os.chmod(path, 0o644)
        except OSError as error:
            report(f"cannot create /etc/resolv.conf on the root disk: {error.strerror or error}")
            return None
        report("the image has no /etc/resolv.conf: created it (empty) on the VM's root disk")
    with open(runtime_copy, "wb") as runtime_file:
        runtime_file.write(content)
    os.chmod(runtime_copy, 0o644)
    return path


class Stage2(NamedTuple):
    """How stage 1 execs kestrel inside the new root."""

    program: str
    argv: list[str]
    env: dict[str, str]


def stage2_command(runtime_dir: str, environ: Mapping[str, str], root_mounted_at_ms: int) -> Stage2:
    """The runtime's own loader running its interpreter on ``runtime_dir/kestrel.pyz``,
    as the C init runs stage 1 (docs/guest.md)."""
    python = f"{runtime_dir}/python"
    env = {name: environ[name] for name in PASSED_ENV if name in environ}
    env.update({"PYTHONHOME": python, STAGE_ENV: "2", ROOT_MOUNTED_ENV: str(root_mounted_at_ms)})
    argv = [
        "kestrel", "--library-path", f"{python}/lib", f"{python}/bin/python3",
        "-s", "-S", "-B", f"{runtime_dir}/kestrel.pyz",
    ]  # fmt: skip
    return Stage2(f"{python}/lib/{LOADER_NAME}", argv, env)


def _stage1_runtime() -> tuple[str, str]:
    """The running interpreter's prefix and kestrel's zipapp, as the C init started them."""
    prefix = os.environ.get("PYTHONHOME") or sys.prefix or STAGE1_RUNTIME
    agent = sys.argv[0] if sys.argv and sys.argv[0].endswith(".pyz") else STAGE1_AGENT
    for path in (f"{prefix}/lib/{LOADER_NAME}", agent):
        if not os.path.isfile(path):
            raise RootfsError(f"{path} is missing: this initramfs is not the volant boot image")
    return prefix, os.path.abspath(agent)


def switch_to_root_disk(
    boot: Boot, config_path: str, console: Console, *, timeout_s: float = ROOT_DEVICE_TIMEOUT_S
) -> NoReturn:
    """Stage 1 (PID 1 only): mount ``boot``'s root device, switch root, exec stage 2."""
    assert boot.root_device is not None and boot.root_fstype is not None
    prefix, agent = _stage1_runtime()
    waited = wait_for_device(boot.root_device, timeout_s)
    if waited >= 1.0:
        console.log(f"root device {boot.root_device} appeared after {waited:.1f} s")
    root = ROOT_MOUNT_POINT
    mount_root(root_mounts(boot.root_device, boot.root_fstype, root))
    make_mount_points(root, console.log)
    if os.path.isdir(f"{root}/run"):
        copy_tree(f"{root}/run", "/run")  # the image's /run, so the tmpfs hides none of it
    os.makedirs(f"{RUNTIME_DIR}/python", mode=0o755, exist_ok=True)
    os.chmod(RUNTIME_DIR, 0o755)
    _copy_file(agent, f"{RUNTIME_DIR}/kestrel.pyz", 0o644)
    _copy_file(config_path, STAGE2_CONFIG, 0o644)
    _bind(prefix, f"{RUNTIME_DIR}/python", read_only=True)
    resolv_conf = place_resolv_conf(root, RUNTIME_DIR, console.log)
    if resolv_conf is not None:
        _bind(f"{RUNTIME_DIR}/resolv.conf", resolv_conf, read_only=False)
    with contextlib.suppress(OSError):  # the init's /tmp: the image's own /tmp is used
        unmount("/tmp", MNT_DETACH)
    for point in MOVED_MOUNTS:
        try:
            _mount(point, root + point, None, MS_MOVE, None)
        except OSError as error:
            raise RootfsError(f"cannot move {point} into the root disk: {error.strerror}") from None
    os.chdir(root)
    try:
        _mount(".", "/", None, MS_MOVE, None)
    except OSError as error:
        raise RootfsError(f"cannot make {root} the root (mount --move): {error.strerror}") from None
    os.chroot(".")
    os.chdir("/")
    mounted = console.event("root_mounted", device=boot.root_device, fstype=boot.root_fstype)
    stage2 = stage2_command(RUNTIME_DIR, os.environ, mounted["uptime_ms"])
    try:
        os.execve(stage2.program, stage2.argv, stage2.env)
    except OSError as error:
        raise RootfsError(f"cannot exec stage 2 ({stage2.program}): {error.strerror}") from None


def _bind(source: str, target: str, *, read_only: bool) -> None:
    try:
        _mount(source, target, None, MS_BIND, None)
        if read_only:
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
    except OSError as error:
        raise RootfsError(f"cannot bind {source} on {target}: {error.strerror}") from None
