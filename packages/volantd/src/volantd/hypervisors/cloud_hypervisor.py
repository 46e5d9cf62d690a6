"""The Cloud Hypervisor driver: KVM only, virtio-pci devices, driven through CH's REST API.

Each VM lives in its run directory (CH's working directory), under the same per-VM monitor as
QEMU (volantd/vmm_monitor.py), so VMs outlive the daemon and are found again by `attach`:

    api.sock      CH's API socket (``cloud-hypervisor --api-socket path=api.sock``)
    serial.sock   the guest's serial port, served by CH; the monitor is its only client
    serial.log    everything the guest printed (written by the monitor)
    console.sock  the serial console for clients (served by the monitor)
    vsock.sock    hybrid vsock, when the spec has a vsock device there
    vm-config.json  the body of ``vm.create``, for the operator
    vmm.log       CH's own output; vmm.pid, monitor.pid, exit.json as for QEMU

Start: spawn CH with only its API socket, ``PUT /vm.create``, wait until the monitor is
attached to the serial socket (so no output is lost), ``PUT /vm.boot``. Stop: the ACPI power
button, then ``PUT /vmm.shutdown``, then SIGKILL.

CH boots x86-64 kernels only by PVH (an ELF vmlinux with a PVH note). A registered vmlinux is
used as is; for a bzImage the vmlinux inside it is unpacked once into the cache
(``pvh-kernels/<sha256 of the bzImage>``).

CH needs KVM. `/dev/kvm` opening is not proof (some hosts hang KVM guests), so the first
start on a host boot boots the VM's kernel under CH with a timeout and waits for its banner;
the verdict is cached (``ch-kvm-probe.json``) and reported by `capabilities`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from volantd import paths
from volantd import vmm_monitor as monitor
from volantd.errors import VolantError
from volantd.hypervisors.accel import (
    ACCEL_ENV,
    AccelChoice,
    host_key,
    kvm_device_usable,
    probe_banner,
    requested_accel,
)
from volantd.hypervisors.base import (
    Accel,
    Capabilities,
    LaunchSpec,
    NetworkMode,
    VMProcess,
    VMState,
    VMStatus,
)
from volantd.hypervisors.cloud_hypervisor_api import (
    API_SOCKET,
    IMAGE_TYPES,
    SERIAL_SOCKET,
    CloudHypervisorAPI,
    build_vm_config,
    check_version,
)
from volantd.hypervisors.monitored import (
    MonitoredDriver,
    VMMError,
    check_launch_files,
    check_socket_paths,
    process_alive,
)
from volantd.kernels.errors import KernelImageError
from volantd.kernels.image import ELF_MAGIC
from volantd.kernels.vmlinux import extract_vmlinux, pvh_entry

CH_BINARY = "cloud-hypervisor"
BINARY_ENV = "CLOUDHYPERVISOR"
PROBE_CACHE = "ch-kvm-probe.json"
PVH_KERNELS = "pvh-kernels"
CONFIG_FILE = "vm-config.json"
CONSOLE_WAIT_S = 5.0
STATES = {
    "Running": VMState.RUNNING,
    "Paused": VMState.PAUSED,
    "BreakPoint": VMState.PAUSED,
    "Created": VMState.PAUSED,  # defined, not booted yet
    "Shutdown": VMState.SHUTDOWN,
}


def find_binary(env: dict[str, str] | None = None) -> str:
    """``$CLOUDHYPERVISOR`` (a path or a name on PATH), else ``cloud-hypervisor`` on PATH."""
    env = dict(os.environ) if env is None else env
    explicit = env.get(BINARY_ENV, "")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise VMMError(f"{BINARY_ENV}={explicit!r} is not an executable file")
        return found
    found = shutil.which(CH_BINARY)
    if found is None:
        raise VMMError(
            f"{CH_BINARY} is not on PATH and {BINARY_ENV} is not set: install a Cloud "
            "Hypervisor release (v50.1 or newer) to run VMs with the cloud-hypervisor driver"
        )
    return found


class CloudHypervisorDriver(MonitoredDriver):
    """Runs VMs as Cloud Hypervisor processes on KVM, each under its own monitor process."""

    name = "cloud-hypervisor"
    vmm_label = "Cloud Hypervisor"
    control_socket = API_SOCKET
    control_name = "API socket"

    def __init__(
        self,
        binary: str | None = None,
        cache_dir: Path | None = None,
        accel: str | None = None,
        kvm_device: Path = Path("/dev/kvm"),
    ) -> None:
        self._binary = binary
        self._cache_dir = cache_dir
        self._accel_request = accel
        self._kvm_device = kvm_device

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_binary()
        return self._binary

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir or paths.cache_dir()

    def guest_drivers(self, *, network: bool, disks: int = 0) -> tuple[str, ...]:
        """CH's devices are virtio-pci; vsock is there whenever the spec asks for it."""
        return (
            "virtio_pci",
            *(("virtio_net",) if network else ()),
            *(("virtio_blk",) if disks else ()),
            "vmw_vsock_virtio_transport",
        )

    # -- availability -----------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        try:
            binary = self.binary
            usable, reason = self.kvm_verdict(binary)
        except VolantError as error:
            return Capabilities(self.name, available=False, reason=str(error))
        return Capabilities(
            self.name, available=usable, reason=reason, accel=Accel.KVM,
            vsock=True, vfio=True, hotplug=True, user_networking=False, hybrid_vsock=True,
        )  # fmt: skip

    def kvm_verdict(self, binary: str) -> tuple[bool, str]:
        """Whether CH can run guests here, from what is known without booting one.

        False when VOLANT_ACCEL=tcg, /dev/kvm does not open, or this host boot's probe failed;
        True (with "not proven yet") before the first probe.
        """
        request = requested_accel(self._accel_request)
        if request == "tcg":
            return False, f"{ACCEL_ENV}=tcg: Cloud Hypervisor runs guests under KVM only"
        usable, why = kvm_device_usable(self._kvm_device)
        if not usable:
            return False, f"{why}: Cloud Hypervisor needs KVM"
        if request == "kvm":
            return True, f"{why}; KVM trusted ({ACCEL_ENV}=kvm)"
        cached = self._cached_probe(binary)
        if cached is None:
            return True, f"{why}; KVM not proven yet (the first start boots a probe guest)"
        return cached.accel is Accel.KVM, cached.reason + " (cached)"

    def _cached_probe(self, binary: str) -> AccelChoice | None:
        try:
            cached = json.loads((self.cache_dir / PROBE_CACHE).read_text())
            if cached.get("key") == host_key(binary):
                return AccelChoice(Accel(cached["accel"]), str(cached["reason"]))
        except (OSError, ValueError, KeyError):
            pass
        return None

    def require_kvm(self, vmlinux: Path) -> None:
        """Refuse to start unless KVM runs guests here; boots a probe guest the first time on
        a host boot (`vmlinux` with no initrd, up to 8 s, its banner is the proof)."""
        binary = self.binary
        usable, reason = self.kvm_verdict(binary)
        if not usable:
            raise VMMError(f"Cloud Hypervisor cannot run VMs on this host: {reason}")
        if requested_accel(self._accel_request) == "kvm" or self._cached_probe(binary):
            return
        command = [
            binary, "--kernel", str(vmlinux),
            "--cmdline", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
            "--cpus", "boot=1", "--memory", "size=128M", "--serial", "tty", "--console", "off",
        ]  # fmt: skip
        booted, how = probe_banner(command, label="Cloud Hypervisor")
        verdict = (
            AccelChoice(Accel.KVM, f"KVM booted the guest kernel under Cloud Hypervisor in {how}")
            if booted
            else AccelChoice(Accel.TCG, f"KVM probe: {how}")
        )
        cache = self.cache_dir / PROBE_CACHE
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": host_key(binary), **asdict(verdict)}))
        os.replace(tmp, cache)
        if not booted:
            raise VMMError(f"Cloud Hypervisor cannot run VMs on this host: {verdict.reason}")

    # -- kernels ----------------------------------------------------------------------------

    def boot_kernel(self, kernel: Path) -> Path:
        """The PVH vmlinux to boot for `kernel`: itself if it is one, else the one inside it."""
        with kernel.open("rb") as file:
            is_elf = file.read(4) == ELF_MAGIC
        if is_elf:
            vmlinux = kernel
        else:
            digest = hashlib.sha256(kernel.read_bytes()).hexdigest()
            vmlinux = self.cache_dir / PVH_KERNELS / f"{digest}.vmlinux"
            if not vmlinux.is_file():
                try:
                    extract_vmlinux(kernel, vmlinux)
                except KernelImageError as error:
                    raise VMMError(f"kernel {kernel}: {error}") from None
        try:
            entry = pvh_entry(vmlinux)
        except KernelImageError as error:
            raise VMMError(str(error)) from None
        if entry is None:
            raise VMMError(
                f"kernel {kernel} has no PVH entry point (CONFIG_PVH), which Cloud Hypervisor "
                "needs to boot it; register a kernel built with CONFIG_PVH=y"
            )
        return vmlinux

    # -- life cycle -------------------------------------------------------------------------

    def prepare(self, spec: LaunchSpec) -> None:
        check_launch_files(spec, tuple(IMAGE_TYPES))
        for device in spec.devices:
            if not device.exists():
                raise VMMError(f"VM {spec.name}: PCI device {device} does not exist")
        network = spec.network
        if network is not None and network.mode not in (NetworkMode.TAP, NetworkMode.NONE):
            raise VMMError(
                f"VM {spec.name}: Cloud Hypervisor has no user-mode networking ({network.mode} "
                "mode); use bridged or dhcp networking, or the qemu driver"
            )
        run_dir = spec.run_dir.resolve()
        sockets = [API_SOCKET, SERIAL_SOCKET, monitor.CONSOLE_SOCKET]
        check_socket_paths(run_dir, sockets)
        if spec.vsock is not None:
            check_socket_paths(spec.vsock.socket.parent, [spec.vsock.socket.name])
        run_dir.mkdir(parents=True, exist_ok=True)
        self._check_not_running(spec, run_dir)
        self._remove_stale(run_dir, sockets)
        if spec.vsock is not None:
            spec.vsock.socket.unlink(missing_ok=True)

    async def start(self, spec: LaunchSpec) -> VMProcess:
        self.prepare(spec)
        vmlinux = await asyncio.to_thread(self.boot_kernel, spec.kernel)
        await asyncio.to_thread(self.require_kvm, vmlinux)
        run_dir = spec.run_dir.resolve()
        config = build_vm_config(spec, vmlinux, run_dir)
        (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

        async def create_and_boot(vm: VMProcess) -> None:
            api = self._api(vm)
            check_version(await api.ping())
            await api.create(config)
            await self._wait_for_console(vm)
            await api.boot()

        command = [self.binary, "--api-socket", f"path={API_SOCKET}"]
        return await self._launch(
            spec, command, Accel.KVM,
            monitor_options=["--serial-socket", SERIAL_SOCKET], then=create_and_boot,
        )  # fmt: skip

    def _api(self, vm: VMProcess) -> CloudHypervisorAPI:
        return CloudHypervisorAPI(vm.run_dir / API_SOCKET)

    async def _controllable(self, vm: VMProcess) -> bool:
        try:
            await self._api(vm).ping()
        except VMMError:
            return False
        return True

    async def _wait_for_console(self, vm: VMProcess) -> None:
        """After vm.create: wait until the monitor is attached to CH's serial socket, so the
        guest's first words reach serial.log (a CH that makes the socket only at boot: go on)."""
        if not (vm.run_dir / SERIAL_SOCKET).exists():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONSOLE_WAIT_S
        while not (vm.run_dir / monitor.CONSOLE_SOCKET).exists() and loop.time() < deadline:
            if not process_alive(vm.pid, vm.run_dir):
                return  # vm.boot will say what went wrong
            await asyncio.sleep(0.01)

    async def status(self, vm: VMProcess) -> VMStatus:
        if process_alive(vm.pid, vm.run_dir):
            try:
                state = str((await self._api(vm).info()).get("state", ""))
            except VMMError as error:  # API busy or going away: the process is what counts
                return VMStatus(VMState.RUNNING, vm.pid, detail=f"API unavailable: {error}")
            return VMStatus(STATES.get(state, VMState.PAUSED), vm.pid, detail=state)
        return await self._ended_status(vm)

    async def _power_button(self, vm: VMProcess) -> None:
        await self._api(vm).power_button()

    async def _quit(self, vm: VMProcess) -> None:
        await self._api(vm).shutdown_vmm()

    async def attach(self, name: str, run_dir: Path) -> VMProcess | None:
        run_dir = run_dir.resolve()
        found = self._find(run_dir)
        if found is None:
            return None
        pid, monitor_pid = found
        return VMProcess(name, run_dir, pid, monitor_pid, Accel.KVM)
