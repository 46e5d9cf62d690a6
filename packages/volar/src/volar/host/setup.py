"""What `volar setup` does: :func:`plan_setup` turns the checks plus a few facts
(:class:`SetupFacts`) into :class:`Step` records without touching anything, so the plan can be
tested with made-up facts; the command runs the steps. The bridged-networking steps of
`--bridge` (and its teardown) are planned by :mod:`volar.host.bridge`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from volar.host.bridge import plan_bridge
from volar.host.checks import (
    PACKAGES,
    SETUP_PACKAGES,
    Check,
    HostReport,
    Status,
    volant_home,
)
from volar.host.network import NetworkFacts, NetworkSettings, iptables_rules, network_facts
from volar.host.record import SetupRecord, load_record, record_path
from volar.host.steps import Step, StepKind, root_steps
from volar.host.tools import run_tool

__all__ = ["Step", "StepKind", "plan_setup", "render_unit", "root_steps", "setup_facts"]

DEFAULT_UNIT = Path("/etc/systemd/system/volantd.service")
REFERENCE_KERNEL_PACKAGE = "linux-image-cloud-amd64"
"""The package `volantd kernels fetch` downloads: its lists must be there first."""
# The volantd settings a unit passes on when they are set where `volar setup` runs; never the
# API key (a unit file is world-readable: put it in /etc/default/volantd).
UNIT_ENV = (
    "VOLANT_API_LISTEN",
    "VOLANT_API_SOCKET",
    "VOLANT_DB_PATH",
    "VOLANT_KERNELS_DIR",
    "VOLANT_ACCEL",
    "VOLANT_LOG_LEVEL",
    "VOLANT_STOP_VMS_ON_EXIT",
    "VOLANT_BRIDGE",
    "VOLANT_SUBNET",
    "VOLANT_HOST_IP",
    "VOLANT_DNS",
)


@dataclass(frozen=True)
class SetupFacts:
    """What the planner needs besides the checks; gathered by :func:`setup_facts`."""

    volantd: str | None
    home: str | None
    kernel_fix: str | None  # `volantd kernels fetch [--force]`, None when the kernel is fine
    apt_lists_ready: bool
    boot_image_ready: bool = True  # volantd's boot initramfs for rootfs plugins is cached
    systemd: bool = False  # --systemd given
    unit_path: Path = DEFAULT_UNIT
    unit_current: str | None = None  # the unit file's content now (None: absent)
    unit_writable: bool = False
    systemd_running: bool = False
    pid1: str = "init"
    service_enabled: bool = False
    service_active: bool = False
    env: dict[str, str] = field(default_factory=dict)  # VOLANT_* settings for the unit
    # --bridge: the settings, the host's network now, what earlier setups made and where
    # that record lives, and this volar (which the unit runs to set the bridge up at start)
    network: NetworkSettings | None = None
    network_facts: NetworkFacts = field(default_factory=NetworkFacts)
    record: SetupRecord | None = None
    record_path: Path = Path("/var/lib/volant/host-setup.json")
    volar: str | None = None


def bridge_setup_command(volar: str, settings: NetworkSettings) -> tuple[str, ...]:
    """What the volantd unit runs before volantd: the bridge and NAT are gone after a reboot."""
    return (volar, "setup", "--bridge-only", "--yes", *settings.flags())


def render_unit(volantd: str, home: str, env: Mapping[str, str], before: Sequence[str] = ()) -> str:
    """The systemd unit for volantd; `before`, a command its start runs first."""
    lines = [
        "# Written by `volar setup --systemd`; run it again to update this file.",
        "[Unit]",
        "Description=Volant control plane (volantd)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"Environment={shlex.quote(f'VOLANT_HOME={home}')}",
        *(f"Environment={shlex.quote(f'{key}={env[key]}')}" for key in UNIT_ENV if key in env),
        "# Secrets such as VOLANT_API_KEY go here, not in this world-readable file:",
        "EnvironmentFile=-/etc/default/volantd",
        *(
            [
                "# Bridge, address, forwarding and NAT do not survive a reboot: set them up again.",
                f"ExecStartPre={shlex.join(before)}",
            ]
            if before
            else []
        ),
        f"ExecStart={shlex.quote(volantd)} serve",
        "Restart=on-failure",
        "RestartSec=5",
        "# VMs outlive the daemon (docs/hypervisors.md): stopping volantd must not kill them.",
        "KillMode=process",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _package_steps(checks: Sequence[Check]) -> list[Step]:
    wanted: list[str] = []
    for check in checks:
        if check.status is not Status.OK:
            wanted += [package for package in check.packages if package not in wanted]
    if not wanted:
        note = f"{', '.join(SETUP_PACKAGES)}: nothing missing"
        return [Step(StepKind.DONE, "host packages", note=note)]
    return [
        Step(StepKind.RUN, "refresh package lists", ("apt-get", "update", "-q"), needs_root=True),
        Step(
            StepKind.RUN,
            f"install {', '.join(wanted)}",
            ("apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted),
            env={"DEBIAN_FRONTEND": "noninteractive"},
            needs_root=True,
        ),
    ]


def _kernel_steps(checks: Sequence[Check], facts: SetupFacts, updating: bool) -> list[Step]:
    kernel = next((check for check in checks if check.name == "kernel"), None)
    if kernel is not None and kernel.status is Status.OK and facts.kernel_fix is None:
        return [Step(StepKind.DONE, "reference kernel", note=kernel.detail)]
    if facts.volantd is None:
        return [
            Step(
                StepKind.BLOCKED,
                "reference kernel",
                note="volantd is not installed here: install it (pip install volantd, or "
                "`uv sync` in a Volant checkout), then run volar setup again",
            )
        ]
    steps = []
    if not facts.apt_lists_ready and not updating:
        steps.append(
            Step(
                StepKind.RUN,
                "refresh package lists (the kernel comes from apt)",
                ("apt-get", "update", "-q"),
                needs_root=True,
            )
        )
    force = ("--force",) if facts.kernel_fix and "--force" in facts.kernel_fix else ()
    steps.append(
        Step(
            StepKind.RUN, "fetch the reference kernel", (facts.volantd, "kernels", "fetch", *force)
        )
    )
    return steps


def _systemd_steps(facts: SetupFacts) -> list[Step]:
    if facts.volantd is None or facts.home is None:
        return [
            Step(
                StepKind.BLOCKED,
                "volantd service",
                note="volantd is not installed here: the unit would have nothing to run",
            )
        ]
    before: tuple[str, ...] = ()
    if facts.network is not None:
        if facts.volar is None:
            return [
                Step(
                    StepKind.BLOCKED,
                    "volantd service",
                    note="cannot tell where volar is installed, which the unit runs to set the "
                    "bridge up at each start: run volar by its absolute path",
                )
            ]
        before = bridge_setup_command(facts.volar, facts.network)
    unit = render_unit(facts.volantd, facts.home, facts.env, before)
    service = facts.unit_path.name
    changed = unit != facts.unit_current
    steps = []
    if changed:
        steps.append(
            Step(
                StepKind.WRITE,
                f"write {facts.unit_path}",
                path=facts.unit_path,
                content=unit,
                needs_root=not facts.unit_writable,
            )
        )
    else:
        steps.append(Step(StepKind.DONE, f"write {facts.unit_path}", note="unit is up to date"))
    if not facts.systemd_running:
        steps.append(
            Step(
                StepKind.SKIP,
                f"enable {service}",
                note=f"systemd is not running here (PID 1 is {facts.pid1}), so the unit is not "
                "enabled or started: start volantd with `volantd serve` (or your init system)",
            )
        )
        return steps
    if not changed and facts.service_enabled and facts.service_active:
        steps.append(Step(StepKind.DONE, f"enable {service}", note="enabled and running"))
        return steps
    systemctl = ("systemctl",)
    if changed:
        steps.append(
            Step(StepKind.RUN, "reload systemd", (*systemctl, "daemon-reload"), needs_root=True)
        )
    steps.append(
        Step(
            StepKind.RUN,
            f"enable and start {service}",
            (*systemctl, "enable", "--now", service),
            needs_root=True,
        )
    )
    if changed and facts.service_active:
        steps.append(
            Step(
                StepKind.RUN,
                f"restart {service} with the new unit",
                (*systemctl, "restart", service),
                needs_root=True,
            )
        )
    return steps


def _boot_image_steps(facts: SetupFacts) -> list[Step]:
    title = "boot initramfs of rootfs plugins"
    if facts.boot_image_ready:
        return [Step(StepKind.DONE, title, note="built")]
    if facts.volantd is None:
        return [Step(StepKind.SKIP, title, note="volantd is not installed here")]
    # Built now rather than by the first rootfs VM, which would wait for it.
    return [Step(StepKind.RUN, f"build the {title}", (facts.volantd, "boot-image", "build"))]


def plan_setup(checks: Sequence[Check], facts: SetupFacts) -> list[Step]:
    """What `volar setup` does, in order: packages, the reference kernel, the boot initramfs
    of rootfs plugins, with --bridge the bridged networking, and the systemd unit."""
    steps = _package_steps(checks)
    updating = any(step.command[:2] == ("apt-get", "update") for step in steps)
    steps += _kernel_steps(checks, facts, updating)
    steps += _boot_image_steps(facts)
    if facts.network is not None:
        network = facts.network_facts
        if any(PACKAGES["nft"] in step.command for step in steps if step.pending):
            # nft is installed first: NAT is planned with it, not with iptables
            network = replace(network, tools=network.tools | {"nft"})
        steps += plan_bridge(facts.network, network, facts.record, facts.record_path)
    if facts.systemd:
        steps += _systemd_steps(facts)
    return steps


def setup_facts(
    report: HostReport,
    *,
    systemd: bool,
    unit_path: Path = DEFAULT_UNIT,
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    network: NetworkSettings | None = None,
) -> SetupFacts:
    """Gather what :func:`plan_setup` needs from the host (`network`: with --bridge)."""
    env = os.environ if env is None else env
    kernel = report.get("kernel")
    kernel_ok = kernel is not None and kernel.status is Status.OK
    kernel_fix = None if kernel_ok else (kernel.fix if kernel else "volantd kernels fetch")
    apt_ready = kernel_ok or _apt_lists_ready(path, env)
    home = str(report.facts["home"]) if report.facts else None
    unit_current = None
    if systemd:
        try:
            unit_current = unit_path.read_text()
        except OSError:
            unit_current = None
    parent = unit_path.parent
    writable = (
        (os.access(unit_path, os.W_OK) if unit_path.exists() else os.access(parent, os.W_OK))
        if parent.is_dir()
        else False
    )
    running = systemd_running()
    enabled = active = False
    if systemd and running:
        enabled = _systemctl_says(["is-enabled", unit_path.name], "enabled", path, env)
        active = _systemctl_says(["is-active", unit_path.name], "active", path, env)
    unit_env = {k: v for k, v in env.items() if k in UNIT_ENV and v}
    if network is not None:
        unit_env.update(network.env())
    where = record_path(volant_home(env))
    return SetupFacts(
        volantd=report.volantd,
        home=home,
        kernel_fix=kernel_fix,
        apt_lists_ready=apt_ready,
        boot_image_ready=_boot_image_built(report.volantd, env),
        systemd=systemd,
        unit_path=unit_path,
        unit_current=unit_current,
        unit_writable=writable,
        systemd_running=running,
        pid1=pid1_name(),
        service_enabled=enabled,
        service_active=active,
        env=unit_env,
        network=network,
        network_facts=(
            network_facts(iptables_rules(network), path=path, env=env)
            if network is not None
            else NetworkFacts()
        ),
        record=load_record(where) if network is not None else None,
        record_path=where,
        volar=find_volar(path),
    )


def find_volar(path: str | None = None) -> str | None:
    """The absolute path of this volar: as it was run, else beside this Python, else on PATH."""
    ran = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if ran is not None and ran.name == "volar" and ran.is_file():
        return str(ran.absolute())
    beside = Path(sys.executable).parent / "volar"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("volar", path=path)
    return str(Path(found).absolute()) if found else None


def _boot_image_built(volantd: str | None, env: Mapping[str, str]) -> bool:
    """Whether `volantd boot-image path` names a file that exists."""
    if volantd is None:
        return False
    try:
        return Path(run_tool([volantd, "boot-image", "path"], env).strip()).is_file()
    except (OSError, subprocess.SubprocessError):
        return False


def systemd_running() -> bool:
    """sd_booted(): systemd is the init system when /run/systemd/system exists."""
    return Path("/run/systemd/system").is_dir()


def pid1_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _apt_lists_ready(path: str | None, env: Mapping[str, str]) -> bool:
    apt_cache = shutil.which("apt-cache", path=path)
    if apt_cache is None:
        return True  # nothing to refresh with; `volantd kernels fetch` explains
    try:
        return bool(
            run_tool([apt_cache, "show", REFERENCE_KERNEL_PACKAGE], env, timeout=60).strip()
        )
    except (OSError, subprocess.SubprocessError):
        return False


def _systemctl_says(
    args: list[str], expected: str, path: str | None, env: Mapping[str, str]
) -> bool:
    systemctl = shutil.which("systemctl", path=path)
    if systemctl is None:
        return False
    try:
        result = subprocess.run(
            [systemctl, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=dict(env),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.stdout.strip() == expected
