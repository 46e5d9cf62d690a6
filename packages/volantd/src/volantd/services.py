"""The long-lived parts of a running volantd, built once and shared by the API routes."""

from __future__ import annotations

from dataclasses import dataclass

from volantd.artifacts import ArtifactCache
from volantd.deployments import DeploymentController
from volantd.devices import AllowList, DeviceManager, Sysfs
from volantd.events import EventBus
from volantd.hypervisors import CloudHypervisorDriver, HypervisorDriver, QemuDriver
from volantd.kernels import KernelStore
from volantd.network import (
    BridgedNetwork,
    Networks,
    UserNetwork,
    VsockNetwork,
    host_resolvers,
)
from volantd.paths import cache_dir, run_dir
from volantd.registry import PluginRegistry
from volantd.settings import Settings
from volantd.store import Database, open_database
from volantd.vms.orchestrator import Orchestrator


@dataclass
class Services:
    settings: Settings
    db: Database
    cache: ArtifactCache
    plugins: PluginRegistry
    bus: EventBus
    vms: Orchestrator
    deployments: DeploymentController
    devices: DeviceManager

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open the store (migrating it), the artifact cache and the VM orchestrator."""
        settings.home.mkdir(parents=True, exist_ok=True)
        db = open_database(settings.database)
        cache = ArtifactCache(cache_dir(settings.home))
        bus = EventBus(db)
        kernels = KernelStore(settings.kernels, cache_dir(settings.home))
        drivers: list[HypervisorDriver] = [
            QemuDriver(cache_dir=cache_dir(settings.home)),
            CloudHypervisorDriver(cache_dir=cache_dir(settings.home)),
        ]
        default = next(d for d in drivers if d.name == settings.default_hypervisor)
        bridged = BridgedNetwork(
            db,
            bridge=settings.bridge,
            gateway=settings.bridge_network,
            dns=settings.dns if settings.dns is not None else host_resolvers(),
            state_dir=settings.home / "network",
        )
        networks = Networks([VsockNetwork(), UserNetwork(db), bridged])
        devices = DeviceManager(
            db,
            Sysfs(settings.sysfs_root),
            AllowList(settings.vfio_allowlist, deny_when_empty=True),
        )
        vms = Orchestrator(
            db, kernels, default, bus, run_dir(settings.home), cache_dir(settings.home), networks,
            devices, drivers=[driver for driver in drivers if driver is not default],
        )  # fmt: skip
        deployments = DeploymentController(db, vms, bus)
        return cls(settings, db, cache, PluginRegistry(db, cache), bus, vms, deployments, devices)

    async def start(self) -> None:
        """Adopt the VMs a previous volantd left running, then keep deployments at their
        replica counts."""
        await self.vms.recover()
        self.deployments.start()

    async def close(self) -> None:
        await self.deployments.close()
        await self.vms.close(stop_vms=self.settings.stop_vms_on_exit)
        self.bus.close()
        self.db.close()
