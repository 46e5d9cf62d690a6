"""`volantd host check`: what this host offers volantd, as the daemon itself would see it.

`volar doctor` runs this through a subprocess (volar never imports volantd): the QEMU binary,
the default kernel, whether /dev/kvm opens, and the acceleration volantd would pick, with the
reason. The acceleration comes from the same code, environment and probe cache as the QEMU
driver, so running the check also warms the cache the daemon reads. Cloud Hypervisor (an
optional driver) is reported the same way: its binary, and whether it can run VMs here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from volantd import __version__
from volantd.errors import VolantError
from volantd.hosttools import PACKAGES
from volantd.hypervisors.accel import (
    ACCEL_ENV,
    cached_probe,
    choose_accel,
    kvm_device_usable,
    requested_accel,
)
from volantd.hypervisors.cloud_hypervisor import CloudHypervisorDriver
from volantd.kernels.errors import KernelIntegrityError, KernelNotFoundError
from volantd.kernels.store import KernelStore
from volantd.paths import cache_dir, volant_home
from volantd.settings import Settings

QEMU_BINARY = "qemu-system-x86_64"
KVM_DEVICE = Path("/dev/kvm")

host_app = typer.Typer(no_args_is_help=True, help="This host: what volantd can use on it.")


def _home_and_kernels() -> tuple[Path, Path]:
    """The daemon's home and kernel store, as `volantd serve` would resolve them."""
    try:
        settings = Settings.from_environment()
        return settings.home, settings.kernels
    except VolantError:  # e.g. a listen address `serve` would refuse: not this check's business
        home = Path(os.environ["VOLANT_HOME"]) if os.environ.get("VOLANT_HOME") else volant_home()
        return home, home / "kernels"


def _kernel_facts(kernels: Path, cache: Path) -> tuple[dict[str, Any], Path | None]:
    store = KernelStore(kernels, cache)
    try:
        entry = store.get()
    except KernelIntegrityError as error:
        return {"ok": False, "error": str(error), "fix": "volantd kernels fetch --force"}, None
    except KernelNotFoundError as error:
        return {"ok": False, "error": str(error), "fix": "volantd kernels fetch"}, None
    except (VolantError, OSError) as error:
        return {"ok": False, "error": str(error), "fix": "volantd kernels fetch --force"}, None
    facts = {
        "ok": True,
        "name": entry.name,
        "version": entry.version,
        "image": str(entry.image),
        "source": entry.source.kind,
    }
    return facts, entry.image


def _accel_facts(
    qemu: str | None, kernel: Path | None, probe_cache: Path, probe: bool, kvm_usable: bool
) -> dict[str, Any]:
    """The acceleration VMs would get, decided exactly as the QEMU driver decides it."""
    try:
        requested = requested_accel()
    except VolantError as error:
        return {"requested": os.environ.get(ACCEL_ENV), "accel": None, "reason": str(error)}
    facts: dict[str, Any] = {"requested": requested, "probed": False}
    needs_probe = requested == "auto" and kvm_usable
    if needs_probe and (qemu is None or kernel is None):
        missing = QEMU_BINARY if qemu is None else "a guest kernel"
        reason = f"{KVM_DEVICE} opens, but proving KVM works needs {missing}"
        return {**facts, "accel": None, "reason": reason}
    if needs_probe and not probe:
        assert qemu is not None and kernel is not None
        cached = cached_probe(qemu, kernel, probe_cache)
        if cached is None:
            reason = f"{KVM_DEVICE} opens; KVM not probed yet (the first VM start probes it)"
            return {**facts, "accel": None, "reason": reason}
        return {**facts, "accel": cached.accel.value, "reason": cached.reason}
    try:
        choice = choose_accel(qemu or QEMU_BINARY, kernel or Path("/nonexistent"), probe_cache)
    except (VolantError, OSError) as error:
        return {**facts, "accel": None, "reason": str(error)}
    facts["probed"] = needs_probe and not choice.reason.endswith("(cached)")
    return {**facts, "accel": choice.accel.value, "reason": choice.reason}


def _cloud_hypervisor_facts(cache: Path, kernel: Path | None, probe: bool) -> dict[str, Any]:
    """The Cloud Hypervisor driver as volantd sees it; with `probe`, proves KVM under CH
    with the default kernel the first time on a host boot (as the first CH VM would)."""
    driver = CloudHypervisorDriver(cache_dir=cache)
    try:
        path: str | None = driver.binary
    except VolantError:
        path = None
    capabilities = driver.capabilities()
    if probe and path and capabilities.available and kernel is not None:
        # the verdict (or why there is none) is in the capabilities read next
        with contextlib.suppress(VolantError, OSError):
            driver.require_kvm(driver.boot_kernel(kernel))
        capabilities = driver.capabilities()
    return {"path": path, "available": capabilities.available, "reason": capabilities.reason}


def _default_hypervisor() -> str | None:
    try:
        return Settings.from_environment().default_hypervisor
    except VolantError:
        return None


def host_facts(*, probe: bool = True) -> dict[str, Any]:
    """Everything `volantd host check --json` reports (read by `volar doctor`, volar.host)."""
    home, kernels = _home_and_kernels()
    cache = cache_dir(home)  # the daemon's probe cache (services.py), not VOLANT_CACHE_DIR
    qemu = shutil.which(QEMU_BINARY)
    kernel, image = _kernel_facts(kernels, cache_dir())
    usable, why = kvm_device_usable(KVM_DEVICE)
    return {
        "volantd": {"version": __version__},
        "home": str(home),
        "kernels_dir": str(kernels),
        "qemu": {"path": qemu, "package": PACKAGES[QEMU_BINARY]},
        "kernel": kernel,
        "kvm": {
            "device": str(KVM_DEVICE),
            "exists": KVM_DEVICE.exists(),
            "usable": usable,
            "reason": why,
        },
        "accel": _accel_facts(qemu, image, cache / "accel-probe.json", probe, usable),
        "vsock": Path("/dev/vhost-vsock").exists(),
        "hypervisor": _default_hypervisor(),
        "cloud_hypervisor": _cloud_hypervisor_facts(cache, image, probe),
    }


@host_app.command()
def check(
    as_json: Annotated[bool, typer.Option("--json", help="print the facts as JSON")] = False,
    no_probe: Annotated[
        bool,
        typer.Option("--no-probe", help="never boot the KVM probe guest (report a cached verdict)"),
    ] = False,
) -> None:
    """Report the QEMU binary, default kernel, /dev/kvm and the acceleration VMs would get,
    and whether Cloud Hypervisor can run VMs here.

    With /dev/kvm usable and VOLANT_ACCEL=auto this boots the default kernel under KVM once
    (up to 8 s; again under Cloud Hypervisor when it is installed) unless the verdict is
    cached for this host boot.
    """
    facts = host_facts(probe=not no_probe)
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    kernel = facts["kernel"]
    accel = facts["accel"]
    typer.echo(f"volantd {facts['volantd']['version']}, home {facts['home']}")
    typer.echo(f"qemu:   {facts['qemu']['path'] or 'not found (apt-get install qemu-system-x86)'}")
    typer.echo(f"kernel: {kernel['name'] if kernel['ok'] else kernel['error']}")
    typer.echo(f"kvm:    {facts['kvm']['reason']}")
    typer.echo(f"accel:  {accel['accel'] or 'unknown'} ({accel['reason']})")
    ch = facts["cloud_hypervisor"]
    verdict = "available" if ch["available"] else "unavailable"
    typer.echo(f"cloud-hypervisor: {verdict} ({ch['reason']})")
