"""Busybox for initramfs images: a static binary at /bin/busybox and relative applet links
where ``busybox --list-full`` puts them, plus ``/bin/<applet>`` for every applet.

Where it comes from (``[source]``): no ``busybox_url`` → the build host's static busybox
(Debian: busybox-static); a path or ``file://`` URL → that file; an http(s) URL → a download
verified against ``busybox_sha256``. A ``busybox_sha256`` is checked whatever the source.
"""

from __future__ import annotations

import posixpath
import shutil
import subprocess
from pathlib import Path

from pluginspec import SourceConfig
from pluginspec.cpio import CpioEntry

from .download import check_sha256, download
from .elf import elf_interpreter
from .errors import FledgeError
from .sources import resolve_source

BUSYBOX_PATH = "/bin/busybox"
APPLET_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")
_INSTALL_HINT = "install busybox-static (apt-get install busybox-static) or set source.busybox_url"


def host_busybox() -> Path:
    """The build host's busybox (``busybox`` on PATH)."""
    found = shutil.which("busybox")
    if found is None:
        raise FledgeError(f"no busybox on this host: {_INSTALL_HINT}")
    return Path(found)


def resolve_busybox(source: SourceConfig, base_dir: Path, cache_dir: Path) -> Path:
    """The busybox binary this config asks for, verified to be a static ELF executable."""
    url = source.busybox_url
    if url is None:
        path = host_busybox()
        what = f"host busybox {path}"
    elif url.lower().startswith(("http://", "https://")):
        path = download(url, cache_dir, sha256=source.busybox_sha256, what="source.busybox_url")
        what = f"busybox from {url}"
    else:
        written = url.removeprefix("file://")
        path = resolve_source(written, base_dir, "source.busybox_url")
        if not path.is_file():
            raise FledgeError(f"source.busybox_url: {written!r} ({path}) is not a file")
        what = f"busybox {path}"
    if source.busybox_sha256 is not None:
        check_sha256(path, source.busybox_sha256, "source.busybox_sha256")
    try:
        interpreter = elf_interpreter(path)
    except ValueError:
        raise FledgeError(f"{what} is not an ELF executable: {_INSTALL_HINT}") from None
    if interpreter is not None:
        raise FledgeError(
            f"{what} is dynamically linked (needs {interpreter}) and would not run in the "
            f"guest: {_INSTALL_HINT}"
        )
    return path


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths relative to the root (``bin/ls``, ``sbin/ifconfig``), from
    ``busybox --list-full``; only those in /bin, /sbin, /usr/bin and /usr/sbin."""
    try:
        result = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        raise FledgeError(
            f"cannot run {busybox} --list-full to list its applets: {exc.strerror} (fledge "
            "runs busybox on the build host, so it must be an x86-64 Linux binary)"
        ) from None
    if result.returncode != 0:
        raise FledgeError(
            f"{busybox} --list-full failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    applets: set[str] = set()
    for line in result.stdout.split():
        path = posixpath.normpath(line.strip().lstrip("/"))
        if posixpath.dirname(path) in APPLET_DIRS and posixpath.basename(path) != "busybox":
            applets.add(path)
    if not applets:
        raise FledgeError(f"{busybox} --list-full listed no applets: is it really busybox?")
    applets.add("bin/sh")
    return sorted(applets)


def applet_link(applet: str) -> CpioEntry:
    """A symlink for ``applet`` (``usr/bin/awk``) pointing relatively at /bin/busybox."""
    path = "/" + applet
    target = posixpath.relpath(BUSYBOX_PATH, posixpath.dirname(path))
    return CpioEntry.symlink(path, target)


def busybox_entries(busybox: Path) -> list[CpioEntry]:
    """/bin/busybox (0755) and a relative link per applet where busybox puts it, /bin/sh
    included; every applet is also reachable as /bin/<name>, as in upstream images (whose
    manifests say ``/bin/httpd``)."""
    applets = busybox_applets(busybox)
    names = {posixpath.basename(applet) for applet in applets}
    entries = [CpioEntry.file(BUSYBOX_PATH, busybox.read_bytes(), 0o755)]
    entries += [applet_link(applet) for applet in applets]
    entries += [
        applet_link(f"bin/{name}") for name in sorted(names) if f"bin/{name}" not in applets
    ]
    return entries
