"""The VM life cycle: create, start, stop, restart, delete, and keeping track of every VM.

Each state change is written to the store before anything else learns of it, then published
as an event. A running VM has a watcher that follows kestrel's console events (readiness and
the boot waterfall) and notices within a second when its VMM dies. VMMs are detached from
volantd once recorded, so they outlive a daemon restart; :meth:`Orchestrator.recover` adopts
them again (or marks them crashed and frees what they held).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from pluginspec import GuestDisk, PluginManifest, VMConfig, parse_vm_config
from volantd.boot.bootimage import ensure_boot_initramfs
from volantd.boot.contract import (
    agent_guest_port,
    filesystem_drivers,
    guest_contract,
    kernel_cmdline,
    mac_for,
    prepare_initrd,
    virtio_disk_device,
)
from volantd.cloudinit import SEED_DISK, cloud_init_seed
from volantd.cloudinit.sources import refuse_host_files
from volantd.devices import AllowList, DeviceManager, VfioUnsupportedError
from volantd.disks import data_disks, root_disk
from volantd.errors import VolantError
from volantd.events import EventBus
from volantd.hypervisors import DiskSpec, HypervisorDriver, LaunchSpec, VMProcess
from volantd.hypervisors.base import VsockSpec, vsock_cid_for
from volantd.kernels import KernelStore
from volantd.network import Networks, UserNetwork
from volantd.store import ConflictError, Database, NotFoundError, VMRecord
from volantd.vms import states
from volantd.vms.agent_channel import AgentChannels, VsockChannel
from volantd.vms.console import ConsoleEvents
from volantd.vms.hypervisors import Hypervisors
from volantd.vms.naming import check_name

log = logging.getLogger("volantd.vms")
T = TypeVar("T")

DEFAULT_READY_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 30.0
WATCH_INTERVAL_S = 0.2
Wait = Literal["none", "agent", "healthy"]


class VMError(VolantError):
    """A VM operation failed; the VM's record says what state it was left in."""


class ReadyTimeoutError(VMError):
    """The guest did not become ready in time; the VM was stopped and marked crashed."""


@dataclass(frozen=True)
class CreateRequest:
    """What ``POST /api/v1/vms`` asks for (request fields win over ``config``'s)."""

    name: str
    plugin: str | None = None
    cpu_cores: int | None = None
    memory_mb: int | None = None
    kernel_cmdline: str | None = None
    config: dict[str, Any] | None = None
    deployment: str | None = None


@dataclass
class Running:
    """What volantd holds for a VM whose VMM runs."""

    process: VMProcess
    console: ConsoleEvents
    agent_expected: bool
    started: float  # time.monotonic() when the start was asked for
    driver: HypervisorDriver
    agent_ready: asyncio.Event = field(default_factory=asyncio.Event)
    workload_healthy: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    watcher: asyncio.Task[None] | None = None
    boot_error: str | None = None
    """Why the guest gave up booting (its ``boot_failed`` event), if it did."""


@dataclass(frozen=True)
class Prepared:
    """A VM's launch spec, what the store records about its run (where its agent is), and
    what preparing it is worth recording in its boot waterfall."""

    spec: LaunchSpec
    changes: dict[str, Any]
    boot: dict[str, Any] = field(default_factory=dict)
    channel: VsockChannel | None = None
    """The agent's vsock channel, for a VM without a NIC."""


class Orchestrator:
    """Owns every VM of this volantd."""

    def __init__(
        self,
        db: Database,
        kernels: KernelStore,
        driver: HypervisorDriver,
        bus: EventBus,
        run_root: Path,
        cache_root: Path | None = None,
        networks: Networks | None = None,
        devices: DeviceManager | None = None,
        *,
        drivers: Iterable[HypervisorDriver] = (),
    ) -> None:
        self.db = db
        self.networks = networks or Networks([UserNetwork(db)])
        self.agent_channels = AgentChannels()
        """Loopback forwarders to the agents of VMs without a NIC (over vsock)."""
        self.devices = devices or DeviceManager(db)
        """Host PCI devices (VFIO): bound on start, given back when the VMM is gone."""
        self.kernels = kernels
        self.driver = driver
        """The host's default hypervisor driver."""
        self.hypervisors = Hypervisors((driver, *drivers), default=driver.name)
        """Every driver by name: a VM runs under the one its record names."""
        self.bus = bus
        self.run_root = run_root
        self.cache_root = cache_root or run_root.parent / "cache"
        """volantd's cache; the boot initramfs of rootfs plugins is built there."""
        self._running: dict[str, Running] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # -- helpers ----------------------------------------------------------------------------

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _set_state(
        self, name: str, status: str, message: str = "", **changes: Any
    ) -> VMRecord:
        record = await self._db(self.db.vms.update, name, status=status, **changes)
        await self.bus.publish("VM_STATE", name, status=status, message=message or status)
        return record

    def get(self, name: str) -> VMRecord:
        return self.db.vms.get(name)

    def running(self, name: str) -> Running | None:
        return self._running.get(name)

    # -- create -----------------------------------------------------------------------------

    async def create(
        self,
        request: CreateRequest,
        *,
        start: bool = True,
        wait: Wait = "agent",
        timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        background: bool = False,
    ) -> VMRecord:
        """Record the VM (``pending``), then boot it unless ``start`` is false.

        With ``background`` the boot continues after this returns (the API's 202).
        """
        name = check_name(request.name)
        config = await self._db(self.resolve_config, request)
        await self._db(self._check_host_ports, name, config)
        hypervisor = self.hypervisors.name_for(config)
        driver = self.hypervisors.usable(hypervisor, _network_mode(config), self.networks)
        await self._db(self._check_devices, name, config, driver, on_host=start)
        record = VMRecord(
            name=name,
            plugin=config.plugin,
            runtime=config.runtime or config.manifest.runtime,
            status=states.PENDING,
            cpu_cores=config.resources.cpu_cores,
            memory_mb=config.resources.memory_mb,
            kernel_cmdline=config.kernel_cmdline or None,
            mac_address=mac_for(name),
            network_mode=_network_mode(config),
            hypervisor=hypervisor,
            run_dir=self.run_root / name,
            deployment=request.deployment,
        )
        created = await self._db(self.db.vms.create, record, config.model_dump(mode="json"))
        await self.bus.publish("VM_CREATED", name, status=states.PENDING, message="VM created")
        if not start:
            return created
        if background:  # the boot still gets its deadline: a guest never ready is crashed
            self._spawn(self._start_quietly(name, wait, timeout_s))
            return created
        return await self.start(name, wait=wait, timeout_s=timeout_s)

    def resolve_config(self, request: CreateRequest) -> VMConfig:
        """The VM's config: the request's ``config`` (or a new one) with the plugin's
        manifest snapshotted and request fields applied; resources default to the
        manifest's (upstream ignored them)."""
        document = dict(request.config or {})
        plugin_name = request.plugin or document.get("plugin")
        if not plugin_name:
            raise VMError("plugin: name the plugin to run (or set config.plugin)")
        if document.get("plugin") and request.plugin and document["plugin"] != request.plugin:
            raise VMError(
                f"plugin {request.plugin!r} and config.plugin {document['plugin']!r} disagree"
            )
        plugin = self.db.plugins.get(plugin_name)
        if not plugin.enabled:
            raise ConflictError(f"plugin {plugin_name!r} is disabled; enable it to create VMs")
        document["plugin"] = plugin_name
        document.setdefault("manifest", plugin.manifest)
        resources = {
            **(plugin.manifest.get("resources") or {}),
            **(document.get("resources") or {}),
        }
        if request.cpu_cores is not None:
            resources["cpu_cores"] = request.cpu_cores
        if request.memory_mb is not None:
            resources["memory_mb"] = request.memory_mb
        document["resources"] = resources
        if request.kernel_cmdline is not None:
            document["kernel_cmdline"] = request.kernel_cmdline
        config = parse_vm_config(document)
        refuse_host_files(config.cloud_init)
        return config

    def _check_host_ports(self, name: str, config: VMConfig) -> None:
        """Refuse a VM that asks for a host port another VM has published (409, no record)."""
        holders = {lease.port: lease.vm_name for lease in self.db.ports.all()}
        for expose in config.effective_network().expose:
            holder = holders.get(expose.host_port or 0)
            if holder is not None and holder != name:
                raise ConflictError(
                    f"host port {expose.host_port} (expose {expose.name or expose.port}) is "
                    f"already published by vm {holder!r}"
                )

    # -- start ------------------------------------------------------------------------------

    async def start(
        self, name: str, *, wait: Wait = "agent", timeout_s: float = DEFAULT_READY_TIMEOUT_S
    ) -> VMRecord:
        """Boot a pending, stopped or crashed VM; with ``wait``, until the agent is ready or
        the workload healthy (else the VM is stopped, marked crashed, ReadyTimeoutError)."""
        async with self._lock(name):
            record = await self._db(self.db.vms.get, name)
            if record.status not in states.STARTABLE:
                raise ConflictError(f"vm {name!r} is {record.status}; stop it first")
            config = parse_vm_config((await self._db(self.db.vms.config, name)).config)
            hypervisor = self.hypervisors.name_for(config, record)
            driver = self.hypervisors.usable(hypervisor, _network_mode(config), self.networks)
            run = await self._launch(record, driver)
        if wait == "none":
            return await self._db(self.db.vms.get, name)
        return await self._await_ready(name, run, wait, timeout_s)

    async def _await_ready(self, name: str, run: Running, wait: Wait, timeout_s: float) -> VMRecord:
        """Wait for readiness; past ``timeout_s`` stop the VM and mark it crashed."""
        wanted = [run.agent_ready] if run.agent_expected else []
        if wait == "healthy" and run.agent_expected:
            wanted.append(run.workload_healthy)
        ready: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(event.wait() for event in wanted))
        )
        exited: asyncio.Future[Any] = asyncio.ensure_future(run.exited.wait())
        try:
            done, _ = await asyncio.wait(
                [ready, exited], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
            exited.cancel()
        if run.exited.is_set():
            record = await self._db(self.db.vms.get, name)
            raise VMError(f"vm {name!r} stopped during boot ({record.status}): {record.last_error}")
        if not done:
            what = "its agent to be ready" if wait == "agent" else "its workload to be healthy"
            message = f"gave up after {timeout_s:g} s waiting for {what}"
            async with self._lock(name):
                if self._running.get(name) is run:  # not stopped meanwhile by someone else
                    await self._stop_running(name, run, DEFAULT_STOP_TIMEOUT_S,
                                             final=states.CRASHED, reason=message)  # fmt: skip
            raise ReadyTimeoutError(f"vm {name!r}: {message}; it was stopped and marked crashed")
        return await self._db(self.db.vms.get, name)

    async def _start_quietly(self, name: str, wait: Wait, timeout_s: float) -> None:
        """A background start: its outcome is in the VM's record and events, not raised."""
        try:
            await self.start(name, wait="agent" if wait == "none" else wait, timeout_s=timeout_s)
        except VolantError as error:
            log.warning("background start of vm %s: %s", name, error)

    async def _ready_quietly(self, name: str, run: Running) -> None:
        try:
            await self._await_ready(name, run, "agent", DEFAULT_READY_TIMEOUT_S)
        except VolantError as error:
            log.warning("adopted vm %s: %s", name, error)

    async def _launch(self, record: VMRecord, driver: HypervisorDriver) -> Running:
        name = record.name
        started = time.monotonic()
        await self._set_state(name, states.STARTING, "boot requested", last_error=None, boot=None)
        try:
            config = parse_vm_config((await self._db(self.db.vms.config, name)).config)
            prepared = await self._prepare(record, config, driver)
            spec = prepared.spec
            console = ConsoleEvents.from_end(spec.run_dir / "serial.log")  # the log appends
            process = await driver.start(spec)
            changes = dict(prepared.changes)
            if prepared.channel is not None:  # NIC-less: the agent is behind a vsock forwarder
                prepared.channel.save(spec.run_dir)
                changes["agent_port"] = await self.agent_channels.open(name, prepared.channel)
        except BaseException as error:
            await self.agent_channels.close(name)
            await self._db(self.networks.detach, record)
            await self._release_devices(name)
            message = str(error) if isinstance(error, VolantError) else repr(error)
            await self._set_state(name, states.CRASHED, f"start failed: {message}",
                                  last_error=message, pid=None, monitor_pid=None)  # fmt: skip
            raise
        boot = {**prepared.boot, "vmm_spawned_ms": _ms_since(started), "steps": {}}
        agent_expected = config.manifest.workload is not None
        status = states.STARTING if agent_expected else states.RUNNING
        await self._set_state(
            name, status, "VMM started", pid=process.pid, monitor_pid=process.monitor_pid,
            accel=process.accel.value, boot=boot, **changes,
            cpu_cores=config.resources.cpu_cores, memory_mb=config.resources.memory_mb,
            kernel_cmdline=config.kernel_cmdline or None, hypervisor=driver.name,
        )  # fmt: skip
        driver.detach(process)  # recorded: from now on it outlives this daemon
        run = Running(process, console, agent_expected, started, driver)
        self._watch(name, run)
        return run

    async def _prepare(
        self, record: VMRecord, config: VMConfig, driver: HypervisorDriver
    ) -> Prepared:
        name = record.name
        manifest = config.manifest
        kind = "rootfs" if manifest.rootfs is not None else "initramfs"
        try:
            artifact = await self._db(self.db.artifacts.get, config.plugin, manifest.version, kind)
        except NotFoundError:
            artifact = None
        if artifact is None or not Path(artifact.cache_path).is_file():
            raise VMError(
                f"the {kind} of plugin {config.plugin} {manifest.version} is no longer in "
                "the cache; install the plugin again"
            )
        kernel = await self._db(self.kernels.get, config.kernel)
        mode = _network_mode(config)
        exposed = config.effective_network().expose
        agent_guest = agent_guest_port(manifest, (expose.port for expose in exposed))
        run_dir = record.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        devices = await self._db(self._acquire_devices, name, config, driver)
        capabilities = driver.capabilities()
        network = await self._db(
            self.networks.attach, record, mode, exposed, agent_guest, vsock=capabilities.vsock
        )
        vsock_device = None
        if capabilities.vsock:  # kestrel listens there too (its only way in without a NIC)
            vsock_device = VsockSpec(vsock_cid_for(record.id), run_dir / "vsock.sock")
        channel = None
        if network.vsock_agent and vsock_device is not None:
            channel = VsockChannel(vsock_device.cid, str(vsock_device.socket), agent_guest,
                                   capabilities.hybrid_vsock)  # fmt: skip
        boot_image, disks, boot = await self._boot_media(
            name, run_dir, manifest, Path(artifact.cache_path)
        )
        disks += await self._data_disks(run_dir, config)
        seed = await asyncio.to_thread(
            cloud_init_seed, run_dir, config.effective_cloud_init(),
            vm_id=str(record.id), hostname=name, network=network.guest,
        )  # fmt: skip
        seed_disks = []
        if seed is not None and (lacking := kernel.lacking(filesystem_drivers(seed.fstype))):
            await self.bus.publish(
                "VM_STATE", name, status=states.STARTING,
                message=f"kernel {kernel.name} lacks {', '.join(lacking)}: the guest cannot mount "
                "its cloud-init seed; run `volantd kernels fetch`",
            )  # fmt: skip
        if seed is not None:
            disks += (DiskSpec(seed.path, "raw", readonly=True, name=SEED_DISK),)
            seed_disks.append(GuestDisk(name=SEED_DISK, device=virtio_disk_device(len(disks) - 1),
                                        fstype=seed.fstype, readonly=True))  # fmt: skip
        contract = guest_contract(
            name=name, vm_id=str(record.id), manifest=manifest, kernel=kernel,
            agent_port=agent_guest, network=network.guest, extra_disks=seed_disks,
            agent_vsock_port=agent_guest if vsock_device else None,
            drivers=driver.guest_drivers(network=network.guest.mac is not None, disks=len(disks)),
        )  # fmt: skip
        initrd = await asyncio.to_thread(prepare_initrd, run_dir, boot_image, kernel, contract)
        (run_dir / "vm.json").write_text(contract.to_json())
        spec = LaunchSpec(
            name=name, run_dir=run_dir, kernel=kernel.image, initrd=initrd,
            cmdline=kernel_cmdline(config.kernel_cmdline),
            cpus=config.resources.cpu_cores, memory_mb=config.resources.memory_mb,
            network=network.spec, disks=disks, devices=devices, vsock=vsock_device,
        )  # fmt: skip
        changes = {"agent_port": network.agent_port, "network_mode": mode,
                   "ip_address": network.address}  # fmt: skip
        return Prepared(spec, changes, boot, channel)

    async def _boot_media(
        self, name: str, run_dir: Path, manifest: PluginManifest, artifact: Path
    ) -> tuple[Path, tuple[DiskSpec, ...], dict[str, Any]]:
        """The image the VM's initrd starts with, its disks, and what is worth recording.

        An initramfs plugin boots its own initramfs. A rootfs plugin boots the volant boot
        initramfs (built on the first such VM) with its cached image as the root disk, behind
        the VM's own copy-on-write overlay (docs/hypervisors.md).
        """
        rootfs = manifest.rootfs
        if rootfs is None:
            return artifact, (), {}
        built = await asyncio.to_thread(ensure_boot_initramfs, self.cache_root)
        boot: dict[str, Any] = {}
        if built.built:
            boot["boot_image_built_ms"] = int(built.built_s * 1000)
            await self.bus.publish(
                "VM_STATE", name, status=states.STARTING,
                message=f"built the boot initramfs in {built.built_s:.1f} s (once per version)",
            )  # fmt: skip
        disk = await asyncio.to_thread(root_disk, run_dir, artifact, rootfs.format, rootfs.fstype)
        return built.path, (disk,), boot

    async def _data_disks(self, run_dir: Path, config: VMConfig) -> tuple[DiskSpec, ...]:
        """The manifest's extra disks for this VM, after the root disk (docs/hypervisors.md)."""
        manifest = config.manifest
        images: dict[str, Path] = {}
        for disk in manifest.disks:
            if disk.source is None:
                continue
            try:
                record = await self._db(
                    self.db.artifacts.get, config.plugin, manifest.version, f"disk:{disk.name}"
                )
            except NotFoundError:
                continue  # data_disks says the image is missing
            images[disk.name] = Path(record.cache_path)
        return await asyncio.to_thread(data_disks, run_dir, manifest.disks, images)

    def _check_devices(
        self, name: str, config: VMConfig, driver: HypervisorDriver, *, on_host: bool
    ) -> bool:
        """Whether the VM passes PCI devices through, after refusing a driver without VFIO
        and, with ``on_host``, devices volantd may not take now; nothing is bound."""
        devices = config.effective_devices()
        if devices is None or not devices.pci_passthrough:
            return False
        capabilities = driver.capabilities()
        if not capabilities.vfio:
            why = capabilities.vfio_reason or f"the {driver.name} driver has no VFIO"
            raise VfioUnsupportedError(f"devices.pci_passthrough: {why}")
        if on_host:
            allowlist = AllowList(tuple(devices.allowlist))
            self.devices.check(devices.pci_passthrough, holder=name, allowlist=allowlist)
        return True

    def _acquire_devices(
        self, name: str, config: VMConfig, driver: HypervisorDriver
    ) -> tuple[Path, ...]:
        """Claim the VM's PCI devices and bind them to vfio-pci (docs/devices.md)."""
        devices = config.effective_devices()
        if devices is None or not self._check_devices(name, config, driver, on_host=False):
            return ()
        allowlist = AllowList(tuple(devices.allowlist))
        return self.devices.acquire(name, devices.pci_passthrough, allowlist)

    async def _release_devices(self, name: str) -> None:
        """Give the VM's PCI devices back to their host drivers (its VMM is gone)."""
        for problem in await self._db(self.devices.release, name):
            await self.bus.publish("VM_DEVICE", name, message=f"device kept: {problem}")

    # -- watching ---------------------------------------------------------------------------

    def _watch(self, name: str, run: Running) -> None:
        self._running[name] = run
        run.watcher = self._spawn(self._follow(name, run))

    def _spawn(self, job: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    async def _follow(self, name: str, run: Running) -> None:
        """Console events → readiness, waterfall and events; VMM death → crashed/stopped."""
        while True:
            for event in run.console.read():
                await self._on_guest_event(name, run, event)
            if not run.driver.alive(run.process):
                break
            await asyncio.sleep(WATCH_INTERVAL_S)
        for event in run.console.read():
            await self._on_guest_event(name, run, event)
        if run.stopping:
            return  # the stop operation records the outcome
        status = await run.driver.status(run.process)
        self._running.pop(name, None)
        await self.agent_channels.close(name)
        await self._db(self.networks.detach, await self._db(self.db.vms.get, name))
        await self._release_devices(name)
        clean = status.state.value == "stopped" and run.boot_error is None
        final = states.STOPPED if clean else states.CRASHED
        if run.boot_error is not None:  # the guest gave up and powered off: a failed boot
            detail = f"boot failed: {run.boot_error}"
        else:
            detail = "the guest powered off" if clean else f"the VMM died: {status.detail}"
        await self._set_state(name, final, detail, pid=None, monitor_pid=None,
                              last_error=None if clean else detail)  # fmt: skip
        run.exited.set()

    async def _on_guest_event(self, name: str, run: Running, event: dict[str, Any]) -> None:
        kind = event["event"]
        record = await self._db(self.db.vms.get, name)
        boot = dict(record.boot or {"steps": {}})
        steps = dict(boot.get("steps") or {})
        if kind not in steps:  # first occurrence only: the waterfall is about the boot
            steps[kind] = {
                "host_ms": _ms_since(run.started),
                "guest_uptime_ms": event.get("uptime_ms"),
            }
            boot["steps"] = steps
        changes: dict[str, Any] = {"boot": boot}
        if kind == "agent_ready" and record.status == states.STARTING:
            changes["status"] = states.RUNNING
        await self._db(self.db.vms.update, name, **changes)
        if "status" in changes:
            await self.bus.publish("VM_STATE", name, status=states.RUNNING, message="agent ready")
        await self.bus.publish("VM_GUEST_EVENT", name, message=kind, data=event)
        if kind == "agent_ready":
            run.agent_ready.set()
        elif kind == "workload_healthy":
            run.workload_healthy.set()
        elif kind == "boot_failed":
            run.boot_error = str(event.get("reason") or "the guest reported no reason")

    # -- stop, restart, delete --------------------------------------------------------------

    async def stop(self, name: str, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> VMRecord:
        """Ask the agent to shut down; after ``timeout_s``, the VMM; then kill."""
        async with self._lock(name):
            return await self._stop_locked(name, timeout_s)

    async def _stop_locked(self, name: str, timeout_s: float) -> VMRecord:
        record = await self._db(self.db.vms.get, name)
        run = self._running.get(name)
        if run is None:
            if record.status in states.ACTIVE:  # lost track (should not happen): tidy up
                await self._db(self.networks.detach, record)
                await self._release_devices(name)
                return await self._set_state(name, states.STOPPED, "not running",
                                             pid=None, monitor_pid=None)  # fmt: skip
            return record
        return await self._stop_running(name, run, timeout_s)

    async def _stop_running(
        self,
        name: str,
        run: Running,
        timeout_s: float,
        *,
        final: str = states.STOPPED,
        reason: str | None = None,
    ) -> VMRecord:
        run.stopping = True
        await self._set_state(name, states.STOPPING, reason or "stop requested")
        record = await self._db(self.db.vms.get, name)
        how = "the VMM"
        if record.agent_url and run.agent_ready.is_set():
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=5) as client:
                    await client.post(f"{record.agent_url}/v1/shutdown")
                how = "the agent"
            deadline = time.monotonic() + timeout_s
            while run.driver.alive(run.process) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        status = await run.driver.stop(run.process, timeout=min(timeout_s, 10.0))
        if run.watcher is not None:
            run.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.watcher
        self._running.pop(name, None)
        await self.agent_channels.close(name)
        await self._db(self.networks.detach, record)
        await self._release_devices(name)
        detail = reason or f"stopped through {how} ({status.detail or status.state.value})"
        updated = await self._set_state(name, final, detail, pid=None, monitor_pid=None,
                                        last_error=reason)  # fmt: skip
        run.exited.set()
        return updated

    async def restart(self, name: str, *, wait: Wait = "agent",
                      timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> VMRecord:  # fmt: skip
        await self.stop(name)
        return await self.start(name, wait=wait, timeout_s=timeout_s)

    async def delete(self, name: str) -> None:
        """Stop the VM if it runs, remove its run directory and its record (one lock hold,
        so no start can slip in between)."""
        async with self._lock(name):
            record = await self._stop_locked(name, DEFAULT_STOP_TIMEOUT_S)
            await self._release_devices(name)  # a device kept by a failed release: retry
            await self._db(self.db.vms.delete, name)
            await asyncio.to_thread(shutil.rmtree, record.run_dir, True)
        await self.bus.publish("VM_DELETED", name, message="VM deleted")

    # -- daemon start and exit --------------------------------------------------------------

    async def recover(self) -> None:
        """Adopt VMs whose VMM survived a daemon restart; the rest are marked crashed."""
        records, _ = await self._db(self.db.vms.list)
        for record in records:
            if record.status not in states.ACTIVE:
                continue
            driver = self.hypervisors.drivers.get(record.hypervisor, self.driver)
            process = await driver.attach(record.name, record.run_dir)
            if process is None:
                await self._db(self.networks.detach, record)
                await self._release_devices(record.name)
                await self._set_state(
                    record.name, states.CRASHED, "the VMM was gone when volantd started",
                    pid=None, monitor_pid=None, last_error="VMM gone while volantd was down",
                )  # fmt: skip
                continue
            config = parse_vm_config((await self._db(self.db.vms.config, record.name)).config)
            run = Running(
                process,
                ConsoleEvents.from_end(record.run_dir / "serial.log"),
                config.manifest.workload is not None,
                time.monotonic(),
                driver,
            )
            steps = (record.boot or {}).get("steps") or {}
            if "agent_ready" in steps or record.status == states.RUNNING:
                run.agent_ready.set()
            if "workload_healthy" in steps:
                run.workload_healthy.set()
            channel = VsockChannel.load(record.run_dir)
            if channel is not None and record.ip_address is None:  # NIC-less: forward again
                port = await self.agent_channels.open(record.name, channel, record.agent_port or 0)
                if port != record.agent_port:
                    record = await self._db(self.db.vms.update, record.name, agent_port=port)
            self._watch(record.name, run)
            if not run.agent_ready.is_set():  # adopted mid-boot: the boot keeps a deadline
                self._spawn(self._ready_quietly(record.name, run))
            log.info("adopted vm %s (%s pid %s)", record.name, driver.name, process.pid)
            await self.bus.publish("VM_ADOPTED", record.name, status=record.status,
                                   message="adopted after a volantd restart")  # fmt: skip
        running = {name: await self._db(self.db.vms.get, name) for name in self._running}
        await self._db(self.networks.reconcile, running)
        await self._db(self.devices.reconcile, set(self._running))  # stopped while we were down

    async def close(self, stop_vms: bool = False) -> None:
        """Daemon exit: stop watching (VMs keep running unless ``stop_vms``)."""
        if stop_vms:
            for name in list(self._running):
                with contextlib.suppress(Exception):
                    await self.stop(name, timeout_s=10)
        for run in list(self._running.values()):
            if run.watcher is not None:
                run.watcher.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._running.clear()
        await self.agent_channels.close_all()
        await self._db(self.networks.close)


def _network_mode(config: VMConfig) -> str:
    """The VM's network mode: its config's, else its manifest's, else ``user``."""
    return config.effective_network().mode


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background VM task failed: %r", task.exception())


__all__ = ["CreateRequest", "NotFoundError", "Orchestrator", "ReadyTimeoutError", "VMError"]
