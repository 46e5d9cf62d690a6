"""The long-lived parts of a running volantd, built once and shared by the API routes."""

from __future__ import annotations

from dataclasses import dataclass

from volantd.artifacts import ArtifactCache
from volantd.deployments import DeploymentController
from volantd.events import EventBus
from volantd.hypervisors import QemuDriver
from volantd.kernels import KernelStore
from volantd.network import BridgedNetwork, Networks, UserNetwork, host_resolvers
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

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """Open the store (migrating it), the artifact cache and the VM orchestrator."""
        settings.home.mkdir(parents=True, exist_ok=True)
        db = open_database(settings.database)
        cache = ArtifactCache(cache_dir(settings.home))
        bus = EventBus(db)
        kernels = KernelStore(settings.kernels, cache_dir(settings.home))
        driver = QemuDriver(cache_dir=cache_dir(settings.home))
        bridged = BridgedNetwork(
            db,
            bridge=settings.bridge,
            gateway=settings.bridge_network,
            dns=settings.dns if settings.dns is not None else host_resolvers(),
            state_dir=settings.home / "network",
        )
        networks = Networks([UserNetwork(db), bridged])
        vms = Orchestrator(
            db, kernels, driver, bus, run_dir(settings.home), cache_dir(settings.home), networks
        )
        deployments = DeploymentController(db, vms, bus)
        return cls(settings, db, cache, PluginRegistry(db, cache), bus, vms, deployments)

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
