"""Network namespaces made by a test, so bridged networking runs for real and no packet
leaves the test's own namespaces (the brief's network rule).

`netns()` creates a uniquely named namespace with loopback up and deletes it, with every
link and process inside it, afterwards; `veth_pair()` joins two namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Namespace:
    """A named network namespace (``/run/netns/<name>``)."""

    name: str

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 30,
        env: dict[str, str] | None = None,
    ) -> str:
        """Run `argv` in the namespace (with `env` added to this environment); its stdout
        (an error shows stderr)."""
        done = subprocess.run(
            self.command(*argv), capture_output=True, text=True, timeout=timeout,
            env={**os.environ, **env} if env else None,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} in netns {self.name} exited {done.returncode}: "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(*argv), **kwargs)  # type: ignore[call-overload]

    def pids(self) -> list[int]:
        done = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in done.stdout.split()]


def namespaces_supported() -> str | None:
    """Why this machine cannot make network namespaces, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        subprocess.run(["ip", "-V"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "iproute2's ip is missing"
    return None


@contextlib.contextmanager
def netns(prefix: str = "vt") -> Iterator[Namespace]:
    """A fresh namespace with loopback up; its processes are killed and it is deleted after."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    namespace = Namespace(name)
    try:
        namespace.run("ip", "link", "set", "lo", "up")
        yield namespace
    finally:
        for pid in namespace.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


CLONE_NEWNET = 0x40000000


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(namespace: Namespace) -> Iterator[None]:
    """Run this thread (and the processes it starts) inside `namespace` for a while.

    A network namespace belongs to a thread, so only the calling thread moves; it returns to
    its own namespace afterwards whatever happens.
    """
    own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    original = os.open(own, os.O_RDONLY)
    try:
        _setns(f"/run/netns/{namespace.name}")
        try:
            yield
        finally:
            if ctypes.CDLL(None, use_errno=True).setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "could not return to the original namespace")
    finally:
        os.close(original)


def veth_pair(
    left: Namespace, left_address: str, right: Namespace, right_address: str
) -> tuple[str, str]:
    """Join two namespaces with a veth pair, addresses given as CIDR; the link names."""
    suffix = secrets.token_hex(3)
    left_link, right_link = f"vl{suffix}", f"vr{suffix}"
    subprocess.run(
        ["ip", "link", "add", left_link, "netns", left.name, "type", "veth",
         "peer", "name", right_link, "netns", right.name],
        check=True, capture_output=True,
    )  # fmt: skip
    for namespace, link, address in (
        (left, left_link, left_address),
        (right, right_link, right_address),
    ):
        namespace.run("ip", "address", "add", address, "dev", link)
        namespace.run("ip", "link", "set", link, "up")
    return left_link, right_link
