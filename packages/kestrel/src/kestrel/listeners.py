"""The API's listening sockets, opened before anything slow happens.

TCP on ``--listen`` (default ``0.0.0.0:<agent.tcp_port>``) and, when vm.json names a vsock
port and the kernel has AF_VSOCK, vsock too. Binding first also means a workload that
wants the agent's port cannot take the API away (it fails to bind instead).
"""

from __future__ import annotations

import socket

from .config import VMConfig
from .console import Console
from .errors import KestrelError

BACKLOG = 128


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all IPv4 interfaces)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise KestrelError(f"--listen must be HOST:PORT (got {text!r})")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port)


def open_listeners(listen: str | None, config: VMConfig, console: Console) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets; the TCP one is required, vsock is best effort."""
    host, port = parse_listen(listen or f"0.0.0.0:{config.tcp_port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        tcp.listen(BACKLOG)
    except OSError as error:
        tcp.close()
        raise KestrelError(
            f"cannot listen on {host}:{port} for the agent API: {error.strerror or error}"
        ) from None
    tcp.setblocking(False)
    sockets = [tcp]
    if config.vsock_port is not None:
        vsock = _open_vsock(config.vsock_port, console)
        if vsock is not None:
            sockets.append(vsock)
    return sockets


def _open_vsock(port: int, console: Console) -> socket.socket | None:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        console.log(f"vsock port {port}: this Python has no AF_VSOCK; TCP only")
        return None
    try:
        vsock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        console.log(f"vsock port {port}: no vsock device ({error.strerror or error}); TCP only")
        return None
    try:
        vsock.bind((socket.VMADDR_CID_ANY, port))
        vsock.listen(BACKLOG)
    except OSError as error:
        vsock.close()
        console.log(f"vsock port {port}: cannot listen ({error.strerror or error}); TCP only")
        return None
    vsock.setblocking(False)
    return vsock
