"""Choosing between KVM and TCG: never trust /dev/kvm, prove it runs a 64-bit guest.

On some hosts `/dev/kvm` opens but KVM guests hang right after the firmware. `auto` therefore
boots the VM's own kernel under KVM once, with a timeout, and uses KVM only when the kernel
got as far as printing its banner. The verdict is cached per host boot, QEMU binary and
kernel, so the probe costs one timeout at most once.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from volantd.errors import VolantError
from volantd.hypervisors.base import Accel

ACCEL_ENV = "VOLANT_ACCEL"
BANNER = b"Linux version"
PROBE_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str


def requested_accel(value: str | None = None) -> str:
    """`value`, else $VOLANT_ACCEL, else "auto"; refuses anything but auto, kvm or tcg."""
    choice = (value or os.environ.get(ACCEL_ENV) or "auto").strip().lower()
    if choice not in ("auto", "kvm", "tcg"):
        raise VolantError(f"{ACCEL_ENV}={choice!r} is not valid: use auto, kvm or tcg")
    return choice


def kvm_device_usable(device: Path = Path("/dev/kvm")) -> tuple[bool, str]:
    """Whether `device` exists and this process may open it read-write."""
    if not device.exists():
        return False, f"{device} does not exist (no KVM on this host)"
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return False, f"{device} cannot be opened: {error.strerror}"
    os.close(fd)
    return True, f"{device} opens"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def host_key(vmm: str) -> str:
    """What a verdict about the host alone holds for: this host boot and this VMM binary."""
    parts = [_boot_id(), vmm, str(os.stat(vmm).st_mtime_ns)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def probe_key(vmm: str, kernel: Path) -> str:
    """What a cached verdict holds for: this host boot, this VMM binary, this kernel."""
    vmm_stat = os.stat(vmm)
    kernel_stat = kernel.stat()
    parts = [_boot_id(), vmm, str(vmm_stat.st_mtime_ns), str(kernel), str(kernel_stat.st_size)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def probe_kvm(qemu: str, kernel: Path, timeout: float = PROBE_TIMEOUT_S) -> AccelChoice:
    """Boot `kernel` under KVM without an initrd and wait for its banner on the serial port."""
    command = [
        qemu, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
        "-serial", "stdio",
    ]  # fmt: skip
    booted, how = probe_banner(command, timeout, "QEMU")
    if booted:
        return AccelChoice(Accel.KVM, f"KVM booted the guest kernel in {how}")
    return AccelChoice(Accel.TCG, f"KVM probe: {how}")


def probe_banner(
    command: list[str], timeout: float = PROBE_TIMEOUT_S, label: str = "the VMM"
) -> tuple[bool, str]:
    """Run `command` (VMM `label` booting a kernel with its serial console on stdout) until
    the kernel's banner appears: (True, "0.42 s"), or (False, why not) after an early exit or
    `timeout` seconds. The VMM is killed either way."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    seen = b""
    try:
        while time.monotonic() - started < timeout:
            chunk = process.stdout.read() or b""
            seen = (seen + chunk)[-4096:]
            if BANNER in seen:
                return True, f"{time.monotonic() - started:.2f} s"
            if process.poll() is not None and not chunk:
                tail = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                return False, f"{label} exited early ({tail[0]})"
            time.sleep(0.02)
        return False, f"guest printed nothing within {timeout:.0f} s"
    finally:
        process.kill()
        process.wait()


def cached_probe(qemu: str, kernel: Path, cache_file: Path) -> AccelChoice | None:
    """The cached KVM probe verdict for this host boot, `qemu` and `kernel`, if there is one."""
    try:
        key = probe_key(qemu, kernel)
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key:
            return AccelChoice(Accel(cached["accel"]), cached["reason"] + " (cached)")
    except (OSError, ValueError, KeyError):
        pass
    return None


def choose_accel(
    qemu: str, kernel: Path, cache_file: Path, requested: str | None = None
) -> AccelChoice:
    """The acceleration to run `kernel` with, honouring VOLANT_ACCEL and the probe cache."""
    choice = requested_accel(requested)
    if choice == "tcg":
        return AccelChoice(Accel.TCG, f"forced by {ACCEL_ENV}=tcg")
    usable, why = kvm_device_usable()
    if choice == "kvm":
        if not usable:
            raise VolantError(f"{ACCEL_ENV}=kvm but {why}")
        return AccelChoice(Accel.KVM, f"forced by {ACCEL_ENV}=kvm")
    if not usable:
        return AccelChoice(Accel.TCG, why)
    cached = cached_probe(qemu, kernel, cache_file)
    if cached is not None:
        return cached
    key = probe_key(qemu, kernel)
    result = probe_kvm(qemu, kernel)
    store_probe(cache_file, key, result)
    return result


def store_probe(cache_file: Path, key: str, result: AccelChoice) -> None:
    """Cache a probe's verdict under `key` (see `probe_key`)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, **asdict(result)}))
    os.replace(tmp, cache_file)
