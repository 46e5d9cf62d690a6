"""Boot of an initramfs plugin to a healthy workload, against the floor of this machine.

In one run, interleaved, N boots each of
  (a) the reference kernel with a minimal busybox /init that prints a marker (the floor), and
  (b) the example plugin (examples/busybox-httpd, built with fledge) until kestrel prints
      its `workload_healthy` event on the console,
both through the QEMU driver. Prints the medians and the ratio b/a (target: <= 1.5 under TCG),
and the median of the per-pair ratios (each plugin boot over the floor boot just before it),
which shared machines' slow and fast spells disturb less.

    uv run python benchmarks/boot.py [--runs 9]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.guest import busybox_initramfs, console_line
from support.plugins import REPO, build_plugin, plugin_vm
from volantd.boot.initrd import assemble_initrd
from volantd.hypervisors import LaunchSpec, NetworkSpec, QemuDriver
from volantd.kernels import KernelStore

FLOOR_MARKER = b"volant-bench: init"
HEALTHY_MARKER = b'"event":"workload_healthy"'
FLOOR_INIT = 'echo "volant-bench: init"\npoweroff -f\n'


async def time_to_marker(driver: QemuDriver, spec: LaunchSpec, marker: bytes) -> float:
    """Seconds from asking the driver to start the VM until `marker` is on its console."""
    log = spec.run_dir / "serial.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    vm = await driver.start(spec)
    try:
        await console_line(log, marker, started)
        return time.monotonic() - started
    finally:
        await driver.stop(vm, timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    options = parser.parse_args()

    kernel = KernelStore.from_environment().get()
    with tempfile.TemporaryDirectory(prefix="volant-bench-") as tmp:
        root = Path(tmp)
        driver = QemuDriver(cache_dir=root / "cache")
        accel = driver.choose_accel(kernel.image)
        print(f"kernel {kernel.name}, accel {accel.accel.value}: {accel.reason}")

        floor_dir = root / "floor"
        floor_dir.mkdir()
        floor_initrd = assemble_initrd(
            floor_dir / "initrd", [busybox_initramfs(floor_dir / "bb.cpio.gz", FLOOR_INIT)]
        )
        floor = LaunchSpec(
            name="floor", run_dir=floor_dir, kernel=kernel.image, initrd=floor_initrd,
            cmdline="console=ttyS0 panic=-1 quiet", network=NetworkSpec(),
        )  # fmt: skip

        started = time.monotonic()
        plugin = build_plugin(REPO / "examples/busybox-httpd/fledge.toml", root / "out")
        print(f"built {plugin.artifact.name} ({plugin.artifact.stat().st_size / 2**20:.1f} MiB) "
              f"in {time.monotonic() - started:.1f} s")  # fmt: skip
        plugin_dir = root / "plugin"
        plugin_dir.mkdir()
        example = plugin_vm(plugin_dir, kernel, plugin, guest_ports=(80,)).spec

        floors, plugins = [], []
        for _ in range(options.runs):
            floors.append(asyncio.run(time_to_marker(driver, floor, FLOOR_MARKER)))
            plugins.append(asyncio.run(time_to_marker(driver, example, HEALTHY_MARKER)))

    def report(label: str, runs: list[float]) -> float:
        median = statistics.median(runs)
        spread = ", ".join(f"{run:.3f}" for run in runs)
        print(f"{label:<40} median {median:.3f} s  [{spread}]")
        return median

    a = report("(a) busybox init marker (floor)", floors)
    b = report("(b) example plugin, workload healthy", plugins)
    print(f"ratio b/a: {b / a:.2f}  (target <= 1.5 under TCG)")
    pairs = zip(floors, plugins, strict=True)
    paired = statistics.median(plugin / floor for floor, plugin in pairs)
    print(f"median of paired ratios: {paired:.2f}")


if __name__ == "__main__":
    main()
