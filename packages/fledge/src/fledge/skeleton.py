"""The directories, account files and device nodes every initramfs image starts with."""

from __future__ import annotations

from pluginspec.cpio import CpioEntry

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"

_DIRECTORIES: tuple[tuple[str, int], ...] = (
    ("/bin", 0o755),
    ("/sbin", 0o755),
    ("/usr/bin", 0o755),
    ("/usr/sbin", 0o755),
    ("/etc", 0o755),
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/dev", 0o755),
    ("/run", 0o755),
    ("/tmp", 0o1777),
    ("/root", 0o700),
    ("/var/log", 0o755),
    ("/var/tmp", 0o1777),
)


def skeleton_entries() -> list[CpioEntry]:
    """Root filesystem layout (docs/guest.md): device nodes are archive entries, so building
    needs no root."""
    entries = [CpioEntry.directory(path, mode) for path, mode in _DIRECTORIES]
    entries += [
        CpioEntry.file("/etc/passwd", PASSWD.encode()),
        CpioEntry.file("/etc/group", GROUP.encode()),
        CpioEntry.file("/etc/hosts", HOSTS.encode()),
        CpioEntry.file("/etc/nsswitch.conf", NSSWITCH.encode()),
        CpioEntry.symlink("/var/run", "../run"),
        CpioEntry.chardev("/dev/console", 5, 1, 0o600),
        CpioEntry.chardev("/dev/null", 1, 3, 0o666),
    ]
    return entries
