"""Reading ``/etc/volant/vm.json`` (guest boot contract 1) into small immutable records.

The contract's schema lives in ``pluginspec`` on the host; the guest reads it as plain JSON
(every key is present, ``null`` when unset). Errors name the offending key, e.g.
``vm.json: workload.restart.policy: must be one of never, on-failure, always``.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import ConfigError

CONTRACT_VERSION = 1
DEFAULT_CONFIG_PATH = "/etc/volant/vm.json"
DEFAULT_AGENT_PORT = 8080
DEFAULT_HEALTH_TIMEOUT_MS = 60_000
DEFAULT_HEALTH_INTERVAL_MS = 50
RESTART_POLICIES = ("never", "on-failure", "always")
WORKLOAD_TYPES = ("http", "process")
BOOT_STRATEGIES = ("initramfs", "rootfs")
ROOT_FILESYSTEMS = ("ext4", "squashfs", "xfs", "btrfs")


class RestartPolicy(NamedTuple):
    """What to do when the workload exits, and how long to wait before each restart."""

    policy: str = "never"
    max_restarts: int | None = None
    backoff_initial_ms: int = 1000
    backoff_max_ms: int = 30_000
    backoff_multiplier: float = 2.0

    def wants_restart(self, exit_code: int, restarts: int) -> bool:
        """Whether a workload that exited with ``exit_code`` (negative: signal) is restarted
        after ``restarts`` earlier restarts."""
        if self.policy == "never" or (exit_code == 0 and self.policy == "on-failure"):
            return False
        return self.max_restarts is None or restarts < self.max_restarts

    def delay_ms(self, attempt: int) -> int:
        """Delay before restart ``attempt`` of a crash loop (0 for the first), capped."""
        delay = self.backoff_initial_ms * self.backoff_multiplier ** min(attempt, 64)
        return int(min(delay, self.backoff_max_ms))


class HealthCheck(NamedTuple):
    """An HTTP probe: GET ``endpoint`` (resolved against ``base_url``) until it answers 2xx."""

    endpoint: str
    timeout_ms: int = DEFAULT_HEALTH_TIMEOUT_MS
    interval_ms: int = DEFAULT_HEALTH_INTERVAL_MS


class Workload(NamedTuple):
    """The program kestrel starts and supervises."""

    type: str
    entrypoint: tuple[str, ...]
    args: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str
    user: str | None
    restart: RestartPolicy
    base_url: str | None
    health_check: HealthCheck | None
    stop_signal: int = signal.SIGTERM
    """What stops the workload (then SIGKILL after the grace period)."""

    @property
    def argv(self) -> list[str]:
        """Entrypoint followed by args."""
        return [*self.entrypoint, *self.args]


class Network(NamedTuple):
    """The guest NIC. ``address`` null: DHCP; ``mac`` null: no NIC (vsock only)."""

    mode: str
    interface: str
    mac: str | None
    address: str | None
    prefix: int | None
    gateway: str | None
    dns: tuple[str, ...]


class Boot(NamedTuple):
    """Stay in the initramfs, or mount ``root_device`` (``root_fstype``) and switch root."""

    strategy: str = "initramfs"
    root_device: str | None = None
    root_fstype: str | None = None


class Disk(NamedTuple):
    """An extra disk: the guest ``device`` it is, and where (``mount``) to mount it, if at all."""

    name: str
    device: str
    fstype: str | None
    mount: str | None
    readonly: bool


class Action(NamedTuple):
    """A manifest action: ``method /v1<path>`` is proxied to the workload with a deadline."""

    name: str
    method: str
    path: str
    timeout_ms: int | None


class VMConfig(NamedTuple):
    """Everything kestrel takes from ``vm.json``."""

    vm_name: str
    vm_id: str
    hostname: str
    workload: Workload | None
    network: Network
    tcp_port: int
    vsock_port: int | None
    console_shell: bool
    boot_epoch_ns: int
    actions: tuple[Action, ...] = ()
    boot: Boot = Boot()
    disks: tuple[Disk, ...] = ()


def load_config(path: str) -> VMConfig:
    """Read and check ``vm.json`` at ``path``."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise ConfigError(f"{path}: not valid JSON: {error}") from None
    return parse_config(document, source=path)


def parse_config(document: Any, *, source: str = "vm.json") -> VMConfig:
    """Check a decoded ``vm.json`` document and turn it into a :class:`VMConfig`."""
    top = _Object(document, "", source)
    version = top.get("contract", int)
    if version != CONTRACT_VERSION:
        raise ConfigError(
            f"{source}: contract: unsupported version {version!r}; this agent reads contract 1"
        )
    vm = top.object("vm")
    agent = top.object("agent")
    tcp_port = agent.get("tcp_port", int, DEFAULT_AGENT_PORT)
    if not 1 <= tcp_port <= 65535:
        raise agent.problem("tcp_port", f"must be a TCP port 1-65535 (got {tcp_port})")
    workload = top.optional_object("workload")
    return VMConfig(
        vm_name=vm.get("name", str),
        vm_id=vm.get("id", str),
        hostname=top.get("hostname", str),
        workload=_workload(workload) if workload is not None else None,
        network=_network(top.object("network")),
        tcp_port=tcp_port,
        vsock_port=agent.get("vsock_port", int, None),
        console_shell=top.get("console_shell", bool, False),
        boot_epoch_ns=top.get("boot_epoch_ns", int, 0),
        actions=_actions(top.optional_object("manifest")),
        boot=_boot(top.optional_object("boot")),
        disks=_disks(top, source),
    )


def _boot(section: _Object | None) -> Boot:
    if section is None:
        return Boot()
    strategy = section.get("strategy", str, "initramfs")
    if strategy not in BOOT_STRATEGIES:
        raise section.problem(
            "strategy", f"must be one of {', '.join(BOOT_STRATEGIES)} (got {strategy!r})"
        )
    if strategy == "initramfs":
        return Boot()
    device = section.get("root_device", str, None)
    if not device or not device.startswith("/"):
        raise section.problem(
            "root_device", f"must be a device path like /dev/vda (got {device!r})"
        )
    fstype = section.get("root_fstype", str, None)
    if fstype not in ROOT_FILESYSTEMS:
        raise section.problem(
            "root_fstype", f"must be one of {', '.join(ROOT_FILESYSTEMS)} (got {fstype!r})"
        )
    return Boot(strategy, device, fstype)


def _disks(top: _Object, source: str) -> tuple[Disk, ...]:
    disks = []
    for index, item in enumerate(top.get("disks", list, [])):
        entry = _Object(item, top.child(f"disks[{index}]"), source)
        device = entry.get("device", str)
        if not device.startswith("/dev/"):
            raise entry.problem("device", f"must be a device path like /dev/vdb (got {device!r})")
        mount = entry.get("mount", str, None)
        if mount is not None and not mount.startswith("/"):
            raise entry.problem("mount", f"must be an absolute path (got {mount!r})")
        fstype = entry.get("fstype", str, None)
        if mount is not None and fstype is None:
            raise entry.problem("fstype", "is required to mount the disk")
        disks.append(
            Disk(
                name=entry.get("name", str),
                device=device,
                fstype=fstype,
                mount=mount,
                readonly=entry.get("readonly", bool, False),
            )
        )
    return tuple(disks)


def parse_signal(value: str | int) -> int:
    """``SIGQUIT``, ``QUIT``, ``SIGRTMIN+3`` or a number as a signal number (ValueError if not)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, str):
        name = value.strip().upper().removeprefix("SIG")
        base, sign, offset = name.partition("+") if "+" in name else name.partition("-")
        if base in ("RTMIN", "RTMAX") and (not sign or offset.isdigit()):
            edge = signal.SIGRTMIN if base == "RTMIN" else signal.SIGRTMAX
            number = edge + (int(offset or 0) if sign == "+" else -int(offset or 0))
            if not signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                raise ValueError(f"{value} is outside SIGRTMIN..SIGRTMAX")
        elif isinstance(getattr(signal, f"SIG{name}", None), signal.Signals):
            number = int(getattr(signal, f"SIG{name}"))
        else:
            raise ValueError(f"unknown signal {value!r}")
    else:
        raise ValueError(f"a signal is a name or a number, not {value!r}")
    if not 1 <= number <= signal.SIGRTMAX:
        raise ValueError(f"signal number {number} is outside 1..{int(signal.SIGRTMAX)}")
    return number


def _workload(section: _Object) -> Workload:
    kind = section.get("type", str)
    if kind not in WORKLOAD_TYPES:
        raise section.problem("type", f"must be one of {', '.join(WORKLOAD_TYPES)} (got {kind!r})")
    base_url = section.get("base_url", str, None)
    if kind == "http" and not base_url:
        raise section.problem("base_url", "is required for an http workload")
    health = section.optional_object("health_check")
    return Workload(
        type=kind,
        entrypoint=section.strings("entrypoint"),
        args=section.strings("args"),
        env=section.string_map("env"),
        workdir=section.get("workdir", str, "/") or "/",
        user=section.get("user", str, None),
        restart=_restart(section),
        base_url=base_url,
        health_check=_health_check(health) if health is not None else None,
        stop_signal=_stop_signal(section),
    )


def _stop_signal(workload: _Object) -> int:
    value = workload.get("stop_signal", (str, int), None)
    if value is None:
        return signal.SIGTERM
    try:
        return parse_signal(value)
    except ValueError as error:
        raise workload.problem("stop_signal", str(error)) from None


def _restart(workload: _Object) -> RestartPolicy:
    value = workload.data.get("restart")
    if value is None:
        return RestartPolicy()
    if isinstance(value, str):  # manifest shorthand, "on-failure"
        value = {"policy": value}
    section = _Object(value, workload.child("restart"), workload.source)
    policy = section.get("policy", str, "never")
    if policy not in RESTART_POLICIES:
        raise section.problem(
            "policy", f"must be one of {', '.join(RESTART_POLICIES)} (got {policy!r})"
        )
    defaults = RestartPolicy()
    result = RestartPolicy(
        policy=policy,
        max_restarts=section.get("max_restarts", int, None),
        backoff_initial_ms=section.get("backoff_initial_ms", int, defaults.backoff_initial_ms),
        backoff_max_ms=section.get("backoff_max_ms", int, defaults.backoff_max_ms),
        backoff_multiplier=float(
            section.get("backoff_multiplier", (int, float), defaults.backoff_multiplier)
        ),
    )
    if result.backoff_initial_ms < 0 or result.backoff_max_ms < result.backoff_initial_ms:
        raise section.problem("backoff_max_ms", "must be >= backoff_initial_ms >= 0")
    if result.backoff_multiplier < 1.0:
        raise section.problem("backoff_multiplier", "must be >= 1.0")
    return result


def _health_check(section: _Object) -> HealthCheck:
    return HealthCheck(
        endpoint=section.get("endpoint", str) or "/",
        timeout_ms=section.get("timeout_ms", int, DEFAULT_HEALTH_TIMEOUT_MS)
        or DEFAULT_HEALTH_TIMEOUT_MS,
        interval_ms=max(1, section.get("interval_ms", int, DEFAULT_HEALTH_INTERVAL_MS)),
    )


def _network(section: _Object) -> Network:
    address = section.get("address", str, None)
    prefix = section.get("prefix", int, None)
    if address is not None and prefix is None:
        raise section.problem("prefix", "is required with an address")
    if prefix is not None and not 0 <= prefix <= 32:
        raise section.problem("prefix", f"must be 0-32 (got {prefix})")
    return Network(
        mode=section.get("mode", str),
        interface=section.get("interface", str, "eth0") or "eth0",
        mac=section.get("mac", str, None),
        address=address,
        prefix=prefix,
        gateway=section.get("gateway", str, None),
        dns=section.strings("dns"),
    )


def _actions(manifest: _Object | None) -> tuple[Action, ...]:
    if manifest is None:
        return ()
    actions = manifest.optional_object("actions")
    if actions is None:
        return ()
    result = []
    for name in sorted(actions.data):
        action = actions.object(name)
        result.append(
            Action(
                name=name,
                method=action.get("method", str, "POST").upper(),
                path=action.get("path", str),
                timeout_ms=action.get("timeout_ms", int, None) or None,
            )
        )
    return tuple(result)


_MISSING: Any = object()


class _Object:
    """A JSON object at a known place in the document, with typed, path-naming getters."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        if not isinstance(data, dict):
            where = f"{path}: " if path else ""
            raise ConfigError(f"{source}: {where}must be a JSON object, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.source = source

    def child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.child(key)}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise self.problem(key, "is missing")
            return default
        value = self.data[key]
        if value is None and default is not _MISSING:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            raise self.problem(key, f"must be {names}, got {_kind(value)}")
        return value

    def object(self, key: str) -> _Object:
        found = self.optional_object(key)
        if found is None:
            raise self.problem(key, "is missing")
        return found

    def optional_object(self, key: str) -> _Object | None:
        value = self.data.get(key)
        return None if value is None else _Object(value, self.child(key), self.source)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.problem(f"{key}[{index}]", f"must be a string, got {_kind(item)}")
        return tuple(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.get(key, dict, {})
        for name, item in value.items():
            if not isinstance(item, str):
                raise self.problem(f"{key}.{name}", f"must be a string, got {_kind(item)}")
        return dict(value)


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_KIND_NAMES.update({list: "a list", dict: "an object"})


def _kind(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number"}
    names.update({str: "a string", list: "a list", dict: "an object"})
    return names.get(type(value), type(value).__name__)
