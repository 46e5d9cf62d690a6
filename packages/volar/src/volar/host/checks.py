"""What `volar doctor` checks: the real host (``PATH``, files, ``volantd host check --json``).

Each check returns a :class:`Check` record with its status, the reason and the fix. volar
never imports volantd (it may be installed without it): everything volantd knows comes from its
command line.
"""

from __future__ import annotations

import enum
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from volar.client import Client, VolarError
from volar.host.network import InvalidSetting, network_settings, read_ip_forward, read_links
from volar.host.record import record_path
from volar.host.tools import run_tool

# The one tool → Debian package map (scripts/bootstrap keeps a bash copy).
PACKAGES: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "gcc": "gcc",
    "libc.a": "libc6-dev",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "nft": "nftables",
    "dnsmasq": "dnsmasq-base",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "ip": "iproute2",
}
QEMU = "qemu-system-x86_64"
CLOUD_HYPERVISOR = "cloud-hypervisor"
CH_INSTALL = (
    "install a Cloud Hypervisor release (v50.1 or newer) on PATH, or set CLOUDHYPERVISOR to it"
)
# (doctor's row, the tool, what needs it): optional tools, each checked by check_tool.
OPTIONAL_TOOLS = (
    ("nft", "nft", "NAT of bridged networking, published ports of bridged VMs"),
    ("dnsmasq", "dnsmasq", "the DHCP server of dhcp-mode VMs"),
    ("mkfs.fat", "mkfs.fat", "cloud-init seed disks (VFAT)"),
    ("mcopy", "mcopy", "cloud-init seed disks (VFAT)"),
)
SETUP_PACKAGES = tuple(
    PACKAGES[tool]
    for tool in (QEMU, "busybox", "gcc", "libc.a", *(tool for _, tool, _ in OPTIONAL_TOOLS))
)
"""What `volar setup` installs when missing: QEMU, fledge's busybox, compiler and libc, nftables
and dnsmasq for bridged networking, and the VFAT tools of cloud-init seeds."""
DEFAULT_FETCH = "volantd kernels fetch"


class Status(enum.StrEnum):
    OK = "OK"
    MISSING = "MISSING"
    WARN = "WARN"


@dataclass(frozen=True)
class Check:
    """One row of `volar doctor`: a required check that is not OK makes the host not ready."""

    name: str
    status: Status
    required: bool
    detail: str
    fix: str | None = None
    value: str | None = None
    packages: tuple[str, ...] = ()
    """Debian packages that fix it (what `volar setup` installs)."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["packages"] = list(self.packages)
        return data


def ready(checks: Sequence[Check]) -> bool:
    return all(check.status is Status.OK for check in checks if check.required)


def install_command(packages: Sequence[str]) -> str:
    return shlex.join(["apt-get", "install", *packages])


# Probing the host


def elf_interpreter(path: Path) -> str | None:
    """The ELF program interpreter of `path` (None: statically linked); ValueError if not ELF."""
    with path.open("rb") as file:
        header = file.read(64)
        if len(header) < 52 or header[:4] != b"\x7fELF" or header[4] not in (1, 2):
            raise ValueError(f"{path} is not an ELF executable")
        order = "<" if header[5] == 1 else ">"
        if header[4] == 2:
            (phoff,) = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
            fmt, offset_at, size_at = order + "Q", 8, 32
        else:
            (phoff,) = struct.unpack_from(order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
            fmt, offset_at, size_at = order + "I", 4, 16
        file.seek(phoff)
        table = file.read(phentsize * phnum)
        for index in range(phnum):
            entry = table[index * phentsize : (index + 1) * phentsize]
            if len(entry) < phentsize:
                raise ValueError(f"{path}: truncated ELF program headers")
            if struct.unpack_from(order + "I", entry, 0)[0] != 3:  # PT_INTERP
                continue
            (offset,) = struct.unpack_from(fmt, entry, offset_at)
            (size,) = struct.unpack_from(fmt, entry, size_at)
            file.seek(offset)
            return file.read(size).rstrip(b"\0").decode(errors="replace")
    return None


def find_volantd(path: str | None = None) -> str | None:
    """volantd on PATH, else next to the Python running volar (same virtualenv)."""
    found = shutil.which("volantd", path=path)
    if found:
        return found
    beside = Path(sys.executable).parent / "volantd"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def volantd_facts(
    volantd: str, *, probe: bool = True, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`volantd host check --json` (see volantd.hostcheck); VolarError when it fails."""
    command = [volantd, "host", "check", "--json", *([] if probe else ["--no-probe"])]
    try:
        return dict(json.loads(run_tool(command, env, timeout=120)))
    except subprocess.CalledProcessError as error:
        # the last line that says something (Typer frames its errors in a box)
        lines = [line.strip(" │╭╮╰╯─") for line in (error.stderr or "").splitlines()]
        why = [line for line in lines if line] or [f"exit {error.returncode}"]
        raise VolarError(f"`{shlex.join(command)}` failed: {why[-1]}") from None
    except subprocess.TimeoutExpired:
        raise VolarError(f"`{shlex.join(command)}` did not finish in 120 s") from None
    except (OSError, ValueError) as error:
        raise VolarError(f"`{shlex.join(command)}` failed: {error}") from None


def volant_home(env: Mapping[str, str] | None = None) -> Path:
    """Where volantd keeps its state, resolved as volantd does (for when it is not installed)."""
    env = os.environ if env is None else env
    if env.get("VOLANT_HOME"):
        return Path(env["VOLANT_HOME"]).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/volant")
    xdg = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "volant"


# The checks


def check_volantd(volantd: str | None, facts: dict[str, Any] | None, error: str | None) -> Check:
    fix = "install volantd (pip install volantd, or `uv sync` in a Volant checkout)"
    if volantd is None:
        return Check("volantd", Status.MISSING, True, "volantd is not installed here", fix)
    if facts is None:
        return Check("volantd", Status.WARN, True, f"{volantd}: {error}", fix)
    version = facts.get("volantd", {}).get("version")
    return Check("volantd", Status.OK, True, f"volantd {version} at {volantd}", value=version)


def check_qemu(path: str | None = None, env: Mapping[str, str] | None = None) -> Check:
    package = PACKAGES[QEMU]
    binary = shutil.which(QEMU, path=path)
    if binary is None:
        return Check(
            "qemu",
            Status.MISSING,
            True,
            f"{QEMU} is not on PATH (runs every VM)",
            install_command([package]),
            packages=(package,),
        )
    try:
        first = run_tool([binary, "--version"], env).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as error:
        return Check(
            "qemu",
            Status.WARN,
            True,
            f"{binary} --version failed: {error}",
            f"apt-get install --reinstall {package}",
            packages=(package,),
        )
    version = first.removeprefix("QEMU emulator version ").split(" ")[0]
    return Check("qemu", Status.OK, True, f"QEMU {version} at {binary}", value=version)


def check_cloud_hypervisor(
    facts: dict[str, Any] | None, path: str | None = None, env: Mapping[str, str] | None = None
) -> Check:
    """The optional Cloud Hypervisor driver (KVM hosts): installed, and able to run VMs here.
    Required only where it is the default hypervisor (VOLANT_HYPERVISOR)."""
    if facts is None:
        env = os.environ if env is None else env
        found = shutil.which(env.get("CLOUDHYPERVISOR") or CLOUD_HYPERVISOR, path=path)
        if found is None:
            return Check("cloud-hypervisor", Status.WARN, False, "not installed (optional)",
                         CH_INSTALL)  # fmt: skip
        detail = f"{found}; whether it can run VMs here is unknown without volantd"
        return Check("cloud-hypervisor", Status.WARN, False, detail, "install volantd")
    ch = facts.get("cloud_hypervisor") or {}
    required = facts.get("hypervisor") == CLOUD_HYPERVISOR
    role = "the default hypervisor" if required else "optional; VMs use qemu unless they ask"
    if not ch.get("path"):
        detail = f"not installed ({role})"
        status = Status.MISSING if required else Status.WARN
        return Check("cloud-hypervisor", status, required, detail, CH_INSTALL)
    if not ch.get("available"):
        detail = f"{ch['path']} cannot run VMs here: {ch.get('reason')} ({role})"
        fix = "Cloud Hypervisor needs a working KVM; see the kvm row"
        status = Status.MISSING if required else Status.WARN
        return Check("cloud-hypervisor", status, required, detail, fix, value=ch["path"])
    detail = f"{ch['path']}: {ch.get('reason')} ({role})"
    return Check("cloud-hypervisor", Status.OK, required, detail, value=ch["path"])


def check_busybox(path: str | None = None) -> Check:
    package = PACKAGES["busybox"]
    why = "fledge puts the host's static busybox into plugin images"
    found = shutil.which("busybox", path=path)
    if found is None:
        return Check(
            "busybox",
            Status.WARN,
            False,
            f"busybox is not on PATH ({why})",
            install_command([package]),
            packages=(package,),
        )
    try:
        interpreter = elf_interpreter(Path(found))
    except (OSError, ValueError) as error:
        return Check(
            "busybox",
            Status.WARN,
            False,
            f"{found}: {error} ({why})",
            install_command([package]),
            packages=(package,),
        )
    if interpreter is not None:
        return Check(
            "busybox",
            Status.WARN,
            False,
            f"{found} is dynamically linked and would not run in a guest ({why})",
            install_command([package]),
            packages=(package,),
        )
    return Check("busybox", Status.OK, False, f"static busybox at {found}", value=found)


def find_compiler(path: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """The C compiler fledge would use: ``$CC``, else ``cc``, else ``gcc``; [] when none."""
    env = os.environ if env is None else env
    explicit = shlex.split(env.get("CC", ""))
    if explicit:
        found = shutil.which(explicit[0], path=path)
        return [found, *explicit[1:]] if found else []
    for name in ("cc", "gcc"):
        if found := shutil.which(name, path=path):
            return [found]
    return []


def check_compiler(path: str | None = None, env: Mapping[str, str] | None = None) -> list[Check]:
    """A C compiler and the static C library: fledge compiles the guest init with them."""
    why = "fledge compiles the guest init (csrc/init.c) statically"
    compiler = find_compiler(path, env)
    libc = PACKAGES["libc.a"]
    if not compiler:
        packages = (PACKAGES["gcc"], libc)
        return [
            Check(
                "c-compiler",
                Status.WARN,
                False,
                f"no C compiler ($CC, cc, gcc): {why}",
                install_command(packages),
                packages=packages,
            ),
            Check(
                "static-libc",
                Status.WARN,
                False,
                "cannot tell without a C compiler",
                install_command([libc]),
                packages=(libc,),
            ),
        ]
    found = Check("c-compiler", Status.OK, False, f"{shlex.join(compiler)}", value=compiler[0])
    try:
        where = run_tool([*compiler, "-print-file-name=libc.a"], env).strip()
    except (OSError, subprocess.SubprocessError):
        where = ""
    if not where or not Path(where).is_absolute() or not Path(where).exists():
        return [
            found,
            Check(
                "static-libc",
                Status.WARN,
                False,
                f"{compiler[0]} finds no libc.a ({why})",
                install_command([libc]),
                packages=(libc,),
            ),
        ]
    resolved = str(Path(where).resolve())
    return [found, Check("static-libc", Status.OK, False, f"libc.a at {resolved}", value=resolved)]


def check_apt(path: str | None = None) -> Check:
    tools = ("apt-get", "apt-cache", "dpkg-deb")
    missing = [tool for tool in tools if shutil.which(tool, path=path) is None]
    if missing:
        return Check(
            "apt",
            Status.WARN,
            False,
            f"{', '.join(missing)} not on PATH: `volantd kernels fetch` and `volar setup` need "
            "Debian's package tools",
            "use a Debian or Ubuntu host, or install the packages named here by hand",
        )
    return Check("apt", Status.OK, False, "apt-get, apt-cache and dpkg-deb present")


def check_tool(name: str, tool: str, why: str, path: str | None = None) -> Check:
    """An optional tool: OK with its path, or a warning naming the package."""
    package = PACKAGES[tool]
    found = shutil.which(tool, path=path)
    if found is not None:
        return Check(name, Status.OK, False, f"{tool} at {found}", value=found)
    detail = f"{tool} is not on PATH ({why})"
    if tool == "nft" and (iptables := shutil.which("iptables", path=path)):
        detail += f"; `volar setup --bridge` would use {iptables} for NAT instead"
    return Check(name, Status.WARN, False, detail, install_command([package]), packages=(package,))


def check_bridge(path: str | None = None, env: Mapping[str, str] | None = None) -> Check:
    """The bridge of bridged VMs (VOLANT_BRIDGE): present, up, with the host's address, and
    IPv4 forwarding on. Without one it warns only where bridged networking was asked for
    (VOLANT_BRIDGE set, or `volar setup --bridge` ran)."""
    env = os.environ if env is None else env
    fix = "volar setup --bridge"
    try:
        settings = network_settings(env=env)
    except InvalidSetting as error:
        return Check("bridge", Status.WARN, False, str(error), "fix that variable")
    ip = shutil.which("ip", path=path)
    if ip is None:
        return Check(
            "bridge",
            Status.WARN,
            False,
            "cannot tell: iproute2's ip is not on PATH",
            install_command([PACKAGES["ip"]]),
            packages=(PACKAGES["ip"],),
        )
    try:
        links = read_links(ip, env)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        return Check("bridge", Status.WARN, False, f"cannot list the links: {error}", fix)
    bridge, address = settings.bridge, settings.host_interface
    link = next((link for link in links if link.name == bridge), None)
    if link is None:
        wanted = bool(env.get("VOLANT_BRIDGE")) or record_path(volant_home(env)).exists()
        if wanted:
            detail = f"{bridge} does not exist: bridged VMs cannot start"
            return Check("bridge", Status.WARN, False, detail, fix)
        detail = (
            f"no {bridge}: bridged networking is not set up (VMs use user-mode networking; "
            "`volar setup --bridge` sets it up)"
        )
        return Check("bridge", Status.OK, False, detail)
    if link.kind != "bridge":
        detail = f"{bridge} is a {link.kind or 'network device'}, not a bridge"
        return Check("bridge", Status.WARN, False, detail, "set VOLANT_BRIDGE to another name")
    problems = []
    if not link.up:
        problems.append("is down")
    if address not in link.addresses:
        problems.append(f"lacks the address {address}")
    if read_ip_forward() != "1":
        problems.append("IPv4 forwarding is off")
    if problems:
        return Check("bridge", Status.WARN, False, f"{bridge} {', '.join(problems)}", fix)
    detail = f"{bridge} up with {address}, IPv4 forwarding on"
    return Check("bridge", Status.OK, False, detail, value=bridge)


def check_kernel(facts: dict[str, Any] | None, env: Mapping[str, str] | None = None) -> Check:
    """The default kernel, as volantd sees it; without volantd, a look at the store folder."""
    if facts is not None:
        kernel = facts.get("kernel") or {}
        store = facts.get("kernels_dir") or "the kernel store"
        if kernel.get("ok"):
            detail = f"{kernel['name']} in {store} (the default kernel; files verified)"
            return Check("kernel", Status.OK, True, detail, value=kernel["name"])
        error = f"{kernel.get('error', 'no kernel')} (store: {store})"
        return Check("kernel", Status.MISSING, True, error, kernel.get("fix") or DEFAULT_FETCH)
    env = os.environ if env is None else env
    store = Path(env["VOLANT_KERNELS_DIR"]) if env.get("VOLANT_KERNELS_DIR") else None
    store = store or volant_home(env) / "kernels"
    names = sorted(p.parent.name for p in store.glob("*/kernel.json") if p.parent.name[0] != ".")
    if names:
        detail = f"{', '.join(names)} in {store} (not verified: volantd is not installed)"
        return Check("kernel", Status.OK, True, detail, value=names[0])
    return Check(
        "kernel",
        Status.MISSING,
        True,
        f"no kernel in {store}",
        "install volantd, then: volantd kernels fetch",
    )


def check_kvm_and_accel(facts: dict[str, Any] | None) -> list[Check]:
    """/dev/kvm, and the acceleration volantd will use (its probe's verdict, with the reason)."""
    if facts is None:
        exists = Path("/dev/kvm").exists()
        detail = "/dev/kvm exists" if exists else "/dev/kvm does not exist"
        return [
            Check(
                "kvm",
                Status.WARN,
                False,
                f"{detail}; usability unknown without volantd",
                "install volantd",
            ),
            Check(
                "accel",
                Status.WARN,
                False,
                "unknown: volantd decides (install it)",
                "install volantd",
            ),
        ]
    kvm = facts.get("kvm") or {}
    accel = facts.get("accel") or {}
    choice, reason = accel.get("accel"), str(accel.get("reason", ""))
    if choice is None:
        accel_check = Check(
            "accel",
            Status.WARN,
            False,
            f"undecided: {reason}",
            "run `volar doctor` again once qemu and the kernel are installed",
        )
    else:
        accel_check = Check("accel", Status.OK, False, f"{choice}: {reason}", value=choice)
    if not kvm.get("exists"):
        fix = "enable virtualisation in the firmware and load kvm_intel or kvm_amd (modprobe)"
        kvm_check = Check(
            "kvm",
            Status.WARN,
            False,
            f"{kvm.get('reason')}: VMs run under TCG (software emulation, slower)",
            fix,
        )
    elif not kvm.get("usable"):
        kvm_check = Check(
            "kvm",
            Status.WARN,
            False,
            f"{kvm.get('reason')}: VMs run under TCG",
            "run volantd as root, or add its user to the kvm group",
        )
    elif choice == "kvm":
        kvm_check = Check("kvm", Status.OK, False, "/dev/kvm present and usable", value="usable")
    elif choice == "tcg":
        kvm_check = Check(
            "kvm",
            Status.WARN,
            False,
            "/dev/kvm opens, but a KVM guest did not boot (see accel): VMs run under TCG, "
            "which is slower",
            "none needed for VMs to work; for KVM, check the host's virtualisation (nested VM?)",
            value="unusable",
        )
    else:
        detail = "/dev/kvm opens; whether KVM guests boot is not known yet (see accel)"
        kvm_check = Check("kvm", Status.WARN, False, detail, value="unproven")
    return [kvm_check, accel_check]


def check_api(client: Client) -> Check:
    """Whether a volantd answers at the configured API (never required: it may be elsewhere)."""
    try:
        info = client.get("/api/v1/system/info")
    except VolarError as error:
        return Check(
            "api",
            Status.WARN,
            False,
            str(error),
            "volantd serve (or `volar setup --systemd` on a systemd host)",
        )
    version = info.get("version") if isinstance(info, dict) else None
    return Check(
        "api", Status.OK, False, f"volantd {version} answers at {client.api}", value=version
    )


@dataclass
class HostReport:
    checks: list[Check]
    volantd: str | None = None
    facts: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return ready(self.checks)

    def get(self, name: str) -> Check | None:
        return next((check for check in self.checks if check.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        accel = (self.facts or {}).get("accel") or {}
        return {
            "ready": self.ready,
            "checks": [check.as_dict() for check in self.checks],
            "accel": {key: accel.get(key) for key in ("accel", "reason", "requested")},
        }


def inspect_host(
    client: Client | None,
    *,
    probe: bool = True,
    path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> HostReport:
    """Every check `volar doctor` shows, in its order; ``client`` None skips the API check."""
    volantd = find_volantd(path)
    facts: dict[str, Any] | None = None
    error = None
    if volantd is not None:
        try:
            facts = volantd_facts(volantd, probe=probe, env=env)
        except VolarError as failure:
            error = str(failure)
    checks = [check_volantd(volantd, facts, error), check_qemu(path, env), check_kernel(facts, env)]
    checks += check_kvm_and_accel(facts)
    checks.append(check_cloud_hypervisor(facts, path, env))
    checks += [check_busybox(path), *check_compiler(path, env), check_apt(path)]
    checks += [check_tool(name, tool, why, path) for name, tool, why in OPTIONAL_TOOLS]
    checks.append(check_bridge(path, env))
    if client is not None:
        checks.append(check_api(client))
    return HostReport(checks, volantd, facts)
