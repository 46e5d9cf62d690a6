"""Cloud Hypervisor's REST API on its unix socket, and the VM config volantd creates VMs with.

The driver starts ``cloud-hypervisor --api-socket path=api.sock`` with no VM and then drives
it: ``PUT /vm.create`` with the config :func:`build_vm_config` makes, ``PUT /vm.boot``,
``GET /vm.info`` for the state, ``PUT /vm.power-button`` (ACPI) and ``PUT /vmm.shutdown``.
Paths are those of CH's OpenAPI document (``/api/v1/...``); errors come back as HTTP 4xx/5xx
with CH's message as the body.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from volantd.hypervisors.base import LaunchSpec, NetworkMode
from volantd.hypervisors.monitored import VMMError

API_SOCKET = "api.sock"
SERIAL_SOCKET = "serial.sock"
API_TIMEOUT_S = 10.0
BOOT_TIMEOUT_S = 30.0
MIB = 1024 * 1024
IMAGE_TYPES = {"raw": "Raw", "qcow2": "Qcow2"}
MIN_VERSION = (50, 1)
"""The oldest Cloud Hypervisor whose disk config has ``image_type`` and ``backing_files``
(qcow2 overlays over the cached images need both)."""


class CloudHypervisorAPIError(VMMError):
    """Cloud Hypervisor refused a request, or did not answer it."""

    def __init__(self, endpoint: str, message: str, status: int | None = None) -> None:
        self.endpoint = endpoint
        self.status = status
        super().__init__(f"Cloud Hypervisor {endpoint}: {message}")


class CloudHypervisorAPI:
    """A client of one VMM's API socket; each call is one HTTP request."""

    def __init__(self, socket: Path, timeout: float = API_TIMEOUT_S) -> None:
        self.socket = socket
        self.timeout = timeout

    async def ping(self) -> dict[str, Any]:
        """``GET /vmm.ping``: the VMM's version (``version``, ``build_version``)."""
        return await self._json("GET", "vmm.ping")

    async def create(self, config: dict[str, Any]) -> None:
        """``PUT /vm.create``: define the VM (nothing runs yet)."""
        await self._request("PUT", "vm.create", config)

    async def boot(self) -> None:
        """``PUT /vm.boot``: start the created VM."""
        await self._request("PUT", "vm.boot", timeout=BOOT_TIMEOUT_S)

    async def info(self) -> dict[str, Any]:
        """``GET /vm.info``: the VM's ``state`` (Created, Running, Paused, Shutdown) and config."""
        return await self._json("GET", "vm.info")

    async def power_button(self) -> None:
        """``PUT /vm.power-button``: press the guest's ACPI power button."""
        await self._request("PUT", "vm.power-button")

    async def shutdown_vmm(self) -> None:
        """``PUT /vmm.shutdown``: end the VMM process, VM and all."""
        await self._request("PUT", "vmm.shutdown")

    async def _json(self, method: str, endpoint: str) -> dict[str, Any]:
        response = await self._request(method, endpoint)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CloudHypervisorAPIError(endpoint, f"answered {response.text[:200]!r}")
        return body

    async def _request(
        self,
        method: str,
        endpoint: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost/api/v1/",
            timeout=timeout or self.timeout,
        ) as client:  # fmt: skip
            try:
                response = await client.request(method, endpoint, json=body)
            except httpx.HTTPError as error:
                raise CloudHypervisorAPIError(endpoint, f"no answer ({error!r})") from None
        if response.status_code >= 300:
            said = response.text.strip() or response.reason_phrase
            raise CloudHypervisorAPIError(
                endpoint, f"HTTP {response.status_code}: {said}", response.status_code
            )
        return response


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of a CH version string ("v50.1", "50.1.0", "v51.0-dirty"), or None."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_version(ping: dict[str, Any]) -> None:
    """Refuse a Cloud Hypervisor older than MIN_VERSION (an unreadable version passes)."""
    text = str(ping.get("version") or ping.get("build_version") or "")
    version = parse_version(text)
    if version is not None and version < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise VMMError(
            f"Cloud Hypervisor {text} is too old: volantd needs v{wanted} or newer (qcow2 disks "
            "with backing files, explicit image types); install a newer release"
        )


def build_vm_config(spec: LaunchSpec, kernel: Path, run_dir: Path) -> dict[str, Any]:
    """The ``vm.create`` body for `spec`, booting `kernel` (an ELF vmlinux with a PVH entry).

    The serial port is a unix socket in `run_dir` (the VM's monitor logs it to serial.log and
    serves console.sock), the virtio console is off; disks are virtio-blk in spec order, the
    NIC is the spec's tap, vsock is hybrid (a unix socket), VFIO devices are their sysfs paths.
    """
    payload: dict[str, Any] = {"kernel": str(kernel), "cmdline": spec.cmdline}
    if spec.initrd is not None:
        payload["initramfs"] = str(spec.initrd.resolve())
    config: dict[str, Any] = {
        "cpus": {"boot_vcpus": spec.cpus, "max_vcpus": spec.cpus},
        "memory": {"size": spec.memory_mb * MIB},
        "payload": payload,
        "serial": {"mode": "Socket", "socket": str(run_dir / SERIAL_SOCKET)},
        "console": {"mode": "Off"},
    }
    if spec.disks:
        config["disks"] = [
            {
                "path": str(disk.path.resolve()),
                "readonly": disk.readonly,
                "image_type": IMAGE_TYPES[disk.format],
                # an overlay's backing file is the cached image (read-only, never written)
                "backing_files": disk.format == "qcow2",
            }
            for disk in spec.disks
        ]
    network = spec.network
    if network is not None and network.mode is not NetworkMode.NONE:
        if network.mode is not NetworkMode.TAP or not network.tap:
            raise VMMError(
                f"VM {spec.name}: Cloud Hypervisor has no user-mode networking ({network.mode} "
                "mode); use bridged or dhcp networking, or QEMU"
            )
        config["net"] = [{"tap": network.tap, "mac": network.mac}]
    if spec.vsock is not None:
        config["vsock"] = {"cid": spec.vsock.cid, "socket": str(spec.vsock.socket)}
    if spec.devices:
        config["devices"] = [{"path": str(device)} for device in spec.devices]
    return config
