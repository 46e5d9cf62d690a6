"""Which hypervisor driver runs a VM, and whether it can run it on this host.

A VM runs under its config's ``hypervisor`` when set, else the one recorded when it was
created, else the host's default (``VOLANT_HYPERVISOR``, default ``qemu``). Before a VM is
created or started the driver's capabilities are checked, so a VM that cannot run is refused
at once with the reason (never left to hang or crash): an unavailable driver is a conflict
with the host (409), a network mode the driver cannot provide a wrong config (422).
"""

from __future__ import annotations

from collections.abc import Iterable

from pluginspec import VMConfig
from volantd.errors import VolantError
from volantd.hypervisors import HypervisorDriver
from volantd.network import Networks
from volantd.store import ConflictError, VMRecord


class HypervisorUnavailableError(ConflictError):
    """The VM's hypervisor cannot run VMs on this host (binary or KVM missing)."""


class UnsupportedByHypervisorError(VolantError):
    """The VM's config asks for something its hypervisor does not offer."""


class Hypervisors:
    """The drivers of this volantd by name, and the host's default."""

    def __init__(self, drivers: Iterable[HypervisorDriver], default: str) -> None:
        self.drivers = {driver.name: driver for driver in drivers}
        if default not in self.drivers:
            raise VolantError(
                f"hypervisor {default!r} is not one of {', '.join(sorted(self.drivers))}"
            )
        self.default = default

    def get(self, name: str) -> HypervisorDriver:
        try:
            return self.drivers[name]
        except KeyError:
            known = ", ".join(sorted(self.drivers))
            raise UnsupportedByHypervisorError(
                f"hypervisor: {name!r} is not one of {known}"
            ) from None

    def name_for(self, config: VMConfig, record: VMRecord | None = None) -> str:
        """The config's hypervisor, else the record's, else the host default."""
        return config.hypervisor or (record.hypervisor if record is not None else self.default)

    def usable(self, name: str, network_mode: str, networks: Networks) -> HypervisorDriver:
        """Driver `name`, once it is available here and offers what `network_mode` needs."""
        driver = self.get(name)
        capabilities = driver.capabilities()
        if not capabilities.available:
            raise HypervisorUnavailableError(
                f"hypervisor {name} cannot run VMs on this host: {capabilities.reason}"
            )
        serving = [  # a mode no network driver serves is the network layer's to refuse
            network
            for network in networks.drivers
            if network_mode in network.modes and (capabilities.vsock or not network.needs_vsock)
        ]
        needs_nat = bool(serving) and all(network.needs_user_networking for network in serving)
        if needs_nat and not capabilities.user_networking:
            raise UnsupportedByHypervisorError(
                f"network.mode: {network_mode!r} needs user-mode networking, which {name} "
                "does not have; use bridged or dhcp networking, or the qemu hypervisor"
            )
        return driver
