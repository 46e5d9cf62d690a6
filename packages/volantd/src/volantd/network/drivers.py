"""Network drivers: what a VM's network mode gives the VMM, the guest and volantd.

The orchestrator never branches on the mode: it asks :class:`Networks` to attach a VM
(leases, taps, rules) and to detach it when it stops. `user` and `isolated` VMs use QEMU's
user-mode NAT with loopback forwards (:class:`UserNetwork`); `bridged` and `dhcp` VMs get a
tap on the host bridge and an address from IPAM (:class:`BridgedNetwork`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pluginspec import Expose, GuestNetwork
from volantd.boot.contract import guest_network
from volantd.errors import VolantError
from volantd.hypervisors.base import NetworkMode, NetworkSpec, PortForward
from volantd.network.dhcp import DhcpServer, Reservation
from volantd.network.firewall import Dnat, apply_ruleset
from volantd.network.links import bridge_state, create_tap, delete_tap, tap_name, volant_taps
from volantd.store import ConflictError, Database, VMRecord
from volantd.vms.ports import bindable, candidate_ports

log = logging.getLogger("volantd.network")

STATE_FILE = "network.json"
"""What a bridged VM's attachment made, in its run directory (read back on daemon start)."""


@dataclass(frozen=True)
class Published:
    """A guest port reachable on the host's `host_port`."""

    purpose: str
    host_port: int
    guest_port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class Attachment:
    """A VM's network for one run.

    `spec` goes to the VMM, `guest` into vm.json; volantd reaches the agent at `address`
    (the guest's own, or None for a host loopback forward) port `agent_port`.
    """

    spec: NetworkSpec
    guest: GuestNetwork
    agent_port: int
    address: str | None = None
    published: tuple[Published, ...] = ()
    vsock_agent: bool = False
    """The agent is reached over vsock (no NIC): volantd forwards a loopback port to it and
    `agent_port` is only known once the VMM runs."""


class NetworkDriver(ABC):
    """The network side of some modes."""

    modes: tuple[str, ...]
    needs_user_networking = False
    """Whether the VMM must offer user-mode NAT (`Capabilities.user_networking`)."""
    needs_vsock = False
    """Whether the VMM must offer vsock (`Capabilities.vsock`); such a driver is preferred
    for its modes where the VMM has it."""

    @abstractmethod
    def attach(
        self, vm: VMRecord, mode: str, exposed: Sequence[Expose], agent_guest_port: int
    ) -> Attachment:
        """Lease and create what VM `vm` needs for one run in `mode`."""

    @abstractmethod
    def detach(self, vm: VMRecord) -> None:
        """Free what a run of `vm` held (the VM stopped or its start failed); idempotent.
        Addresses stay leased until the VM is deleted."""

    def reconcile(self, running: Mapping[str, VMRecord]) -> None:  # noqa: B027 - optional
        """Daemon start: keep what the `running` VMs hold, remove what dead ones left."""

    def close(self) -> None:  # noqa: B027 - optional
        """Daemon exit."""


class Networks:
    """Every network driver, picked by mode."""

    def __init__(self, drivers: Iterable[NetworkDriver]) -> None:
        self.drivers = list(drivers)

    def driver(self, mode: str, *, vsock: bool = False) -> NetworkDriver:
        """The driver of `mode` for a VMM with (or without) vsock."""
        serving = [driver for driver in self.drivers if mode in driver.modes]
        serving.sort(key=lambda driver: not driver.needs_vsock)  # vsock ones first
        for driver in serving:
            if vsock or not driver.needs_vsock:
                return driver
        raise ConflictError(f"network mode {mode!r} is not available on this volantd")

    def attach(
        self,
        vm: VMRecord,
        mode: str,
        exposed: Sequence[Expose],
        agent_guest_port: int,
        *,
        vsock: bool = False,
    ) -> Attachment:
        """Attach `vm` in `mode` (on a VMM offering `vsock` or not)."""
        chosen = self.driver(mode, vsock=vsock)
        for driver in self.drivers:  # a VM whose mode changed: the other driver lets go
            if driver is not chosen:
                driver.detach(vm)
        return chosen.attach(vm, mode, exposed, agent_guest_port)

    def detach(self, vm: VMRecord) -> None:
        for driver in self.drivers:
            driver.detach(vm)

    def reconcile(self, running: Mapping[str, VMRecord]) -> None:
        for driver in self.drivers:
            driver.reconcile(running)

    def close(self) -> None:
        for driver in self.drivers:
            driver.close()


def lease_host_port(db: Database, vm: str, purpose: str, wanted: int | None) -> int:
    """A host port for `purpose` of `vm`: `wanted`, or any free one when None.

    A wanted port published by another VM is refused naming that VM; one some other program
    holds is refused too.
    """
    if wanted is None:
        return db.ports.lease(vm, purpose, candidate_ports())
    holder = _holder(db, wanted)
    if holder is None and not bindable(wanted):
        raise ConflictError(
            f"host port {wanted} ({purpose}) of vm {vm!r} is in use by another program here"
        )
    if holder in (None, vm):
        try:
            return db.ports.lease(vm, purpose, [wanted])
        except ConflictError:
            holder = _holder(db, wanted)  # leased meanwhile by a concurrent create
    raise ConflictError(f"host port {wanted} ({purpose}) is already published by vm {holder!r}")


def _holder(db: Database, port: int) -> str | None:
    return next((lease.vm_name for lease in db.ports.all() if lease.port == port), None)


def _purpose(expose: Expose) -> str:
    return f"expose:{expose.name or expose.port}"


class UserNetwork(NetworkDriver):
    """QEMU user-mode NAT: agent and published ports are forwards on 127.0.0.1."""

    modes = ("user", "isolated")
    needs_user_networking = True

    def __init__(self, db: Database) -> None:
        self.db = db

    def attach(
        self, vm: VMRecord, mode: str, exposed: Sequence[Expose], agent_guest_port: int
    ) -> Attachment:
        try:
            agent_port = self.db.ports.lease(vm.name, "agent", candidate_ports())
            forwards = [PortForward(agent_port, agent_guest_port)]
            published = []
            for expose in exposed:
                host = lease_host_port(self.db, vm.name, _purpose(expose), expose.host_port)
                forwards.append(PortForward(host, expose.port, expose.protocol))
                published.append(Published(_purpose(expose), host, expose.port, expose.protocol))
        except BaseException:
            self.db.ports.release(vm.name)
            raise
        guest = guest_network("isolated" if mode == "isolated" else "user", vm.mac_address)
        vmm_mode = NetworkMode.ISOLATED if mode == "isolated" else NetworkMode.USER
        spec = NetworkSpec(mode=vmm_mode, mac=vm.mac_address, forwards=tuple(forwards))
        return Attachment(spec, guest, agent_port, None, tuple(published))

    def detach(self, vm: VMRecord) -> None:
        self.db.ports.release(vm.name)

    def reconcile(self, running: Mapping[str, VMRecord]) -> None:
        for vm_name in {lease.vm_name for lease in self.db.ports.all()} - set(running):
            self.db.ports.release(vm_name)


class VsockNetwork(NetworkDriver):
    """`isolated` on a VMM with vsock: no NIC at all; only the agent is reachable, over vsock
    (upstream's `vsock` mode, which never worked there). Published ports need a NIC: they
    are left out, and the workload is reached through the agent's proxy."""

    modes = ("isolated",)
    needs_vsock = True

    def attach(
        self, vm: VMRecord, mode: str, exposed: Sequence[Expose], agent_guest_port: int
    ) -> Attachment:
        if exposed:
            log.info("vm %s: isolated without a NIC, its %d expose entries are not published",
                     vm.name, len(exposed))  # fmt: skip
        guest = GuestNetwork.model_validate({"mode": "isolated", "mac": None})
        spec = NetworkSpec(mode=NetworkMode.NONE, mac=vm.mac_address)
        return Attachment(spec, guest, agent_port=0, vsock_agent=True)

    def detach(self, vm: VMRecord) -> None:
        """Nothing on the host belongs to the VM's network (the forwarder is the VM's)."""


@dataclass(frozen=True)
class BridgedRun:
    """What one run of a bridged VM made (its run directory's network.json)."""

    mode: str
    tap: str
    mac: str
    address: str
    hostname: str
    dnat: tuple[Dnat, ...] = ()

    @classmethod
    def load(cls, path: Path) -> BridgedRun | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{**data, "dnat": tuple(Dnat(**rule) for rule in data["dnat"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


class BridgedNetwork(NetworkDriver):
    """A tap per VM on the host bridge; addresses from IPAM (static in vm.json, or served by
    DHCP in `dhcp` mode); published ports as DNAT rules (docs/networking.md)."""

    modes = ("bridged", "dhcp")

    def __init__(
        self,
        db: Database,
        *,
        bridge: str,
        gateway: ipaddress.IPv4Interface,
        dns: Sequence[str],
        state_dir: Path,
    ) -> None:
        self.db = db
        self.bridge = bridge
        self.gateway = gateway
        self.dns = tuple(dns)
        self.dhcp = DhcpServer(bridge, gateway, self.dns, state_dir / "dhcp")
        self._runs: dict[str, BridgedRun] = {}
        # VMs start and stop on several threads at once; the ruleset is rendered from all of
        # them, so a change and its apply must not interleave with another's.
        self._lock = threading.RLock()
        self.seed_pool()

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.gateway.network

    def pool(self) -> list[str]:
        """The subnet's host addresses but the bridge's own."""
        return [str(host) for host in self.subnet.hosts() if host != self.gateway.ip]

    def seed_pool(self) -> None:
        """Make the store's pool of this bridge match the subnet (a changed subnet drops the
        old addresses nobody holds; held ones stay until their VM is deleted)."""
        pool = self.pool()
        self.db.ips.seed(self.bridge, pool)
        self.db.ips.prune(self.bridge, keep=pool)
        self.db.ips.release_orphans()

    def attach(
        self, vm: VMRecord, mode: str, exposed: Sequence[Expose], agent_guest_port: int
    ) -> Attachment:
        with self._lock:
            return self._attach(vm, mode, exposed, agent_guest_port)

    def _attach(
        self, vm: VMRecord, mode: str, exposed: Sequence[Expose], agent_guest_port: int
    ) -> Attachment:
        state = bridge_state(self.bridge)
        if not state.exists:
            raise ConflictError(
                f"network mode {mode} needs the bridge {self.bridge}, which does not exist: "
                "run `volar setup --bridge` (or set VOLANT_BRIDGE to your bridge)"
            )
        address = self.db.ips.lease(self.bridge, vm.name)
        if ipaddress.IPv4Address(address) not in self.subnet:
            raise ConflictError(
                f"vm {vm.name!r} holds {address}, outside the bridge's subnet {self.subnet}; "
                "delete and re-create it"
            )
        self.detach(vm)  # a stale run (crash while volantd was down) goes first
        tap = tap_name(vm.name)
        run = BridgedRun(mode, tap, vm.mac_address, address, vm.name)
        published: list[Published] = []
        try:
            rules = []
            for expose in exposed:
                host = lease_host_port(self.db, vm.name, _purpose(expose), expose.host_port)
                rules.append(Dnat(host, expose.protocol, address, expose.port, vm.name))
                published.append(Published(_purpose(expose), host, expose.port, expose.protocol))
            run = BridgedRun(mode, tap, vm.mac_address, address, vm.name, tuple(rules))
            create_tap(tap, self.bridge)
            self._runs[vm.name] = run
            run.save(vm.run_dir / STATE_FILE)
            self._apply_rules()
            if mode == "dhcp":
                self.dhcp.reserve(vm.name, Reservation(vm.mac_address, address, vm.name))
        except BaseException:
            self.detach(vm)
            raise
        static = mode == "bridged"
        guest = GuestNetwork.model_validate(
            {"mode": mode, "mac": vm.mac_address,
             "address": address if static else None,
             "prefix": self.subnet.prefixlen if static else None,
             "gateway": str(self.gateway.ip) if static else None,
             "dns": list(self.dns) if static else []}
        )  # fmt: skip
        spec = NetworkSpec(mode=NetworkMode.TAP, mac=vm.mac_address, tap=tap)
        return Attachment(spec, guest, agent_guest_port, address, tuple(published))

    def detach(self, vm: VMRecord) -> None:
        with self._lock:
            self._detach(vm)

    def _detach(self, vm: VMRecord) -> None:
        run = self._runs.pop(vm.name, None) or BridgedRun.load(vm.run_dir / STATE_FILE)
        self.db.ports.release(vm.name)
        (vm.run_dir / STATE_FILE).unlink(missing_ok=True)
        if run is None:
            return
        self.dhcp.release(vm.name)
        if run.dnat:
            self._apply_rules()
        delete_tap(run.tap)

    def reconcile(self, running: Mapping[str, VMRecord]) -> None:
        with self._lock:
            self._reconcile(running)

    def _reconcile(self, running: Mapping[str, VMRecord]) -> None:
        self._runs = {}
        for name, vm in running.items():
            run = BridgedRun.load(vm.run_dir / STATE_FILE)
            if run is None:
                continue
            self._runs[name] = run
            if run.mode == "dhcp":
                self.dhcp.reserve(name, Reservation(run.mac, run.address, run.hostname))
        kept = {run.tap for run in self._runs.values()}
        for tap in volant_taps():
            if tap not in kept:
                log.info("removing tap %s: its VM no longer runs", tap)
                delete_tap(tap)
        try:
            self._apply_rules()
        except VolantError as error:
            log.warning("published ports of bridged VMs: %s", error)

    def close(self) -> None:
        self.dhcp.close()

    def _apply_rules(self) -> None:
        rules = [rule for run in self._runs.values() for rule in run.dnat]
        apply_ruleset(rules, self.bridge, str(self.subnet))
