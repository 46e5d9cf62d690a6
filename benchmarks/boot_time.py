"""Boot time of the QEMU driver: VMM spawn -> guest init, against a bare QEMU baseline.

Both sides boot the same reference kernel and the same initrd (busybox, an /init that prints
a marker and powers off) with the same QEMU arguments, in the same run; the baseline starts
QEMU directly with the serial console on a pipe, the driver path goes through the per-VM
monitor and QMP as volantd does. A third side spawns QEMU directly with the driver's exact
arguments (serial to a socket and log file, QMP), separating the cost of those arguments from
the cost of supervision. Prints medians of N runs and the ratios to the baseline.

    uv run python benchmarks/boot_time.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.guest import busybox_initramfs, console_line
from volantd.boot.initrd import assemble_initrd
from volantd.hypervisors import LaunchSpec, NetworkSpec, QemuDriver
from volantd.hypervisors.qemu import build_qemu_args, host_tsc_khz
from volantd.kernels import KernelStore

MARKER = b"volant-bench: init"
INIT = 'echo "volant-bench: init uptime=$(cut -d" " -f1 /proc/uptime)"\npoweroff -f\n'


def baseline_boot(spec: LaunchSpec, driver: QemuDriver) -> tuple[float, float]:
    """Bare QEMU, serial on stdout: seconds from spawn to the marker, and guest uptime then."""
    accel = driver.choose_accel(spec.kernel).accel
    args = build_qemu_args(spec, accel, driver.binary, host_tsc_khz())
    chardev = args.index("-chardev")
    args[chardev : chardev + 4] = ["-serial", "stdio"]  # replaces -chardev X -serial chardev:Y
    qmp = args.index("-qmp")
    del args[qmp : qmp + 2]
    started = time.monotonic()
    process = subprocess.Popen(
        args, cwd=spec.run_dir, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None
    for line in process.stdout:
        if MARKER in line:
            elapsed = time.monotonic() - started
            uptime = float(line.split(b"uptime=")[1].split()[0])
            process.wait(30)
            return elapsed, uptime
    raise RuntimeError("baseline guest never reached init")


async def wait_for_marker(log: Path, started: float) -> tuple[float, float]:
    """Seconds since `started` until the marker is on the console, and the guest's uptime."""
    line = await console_line(log, MARKER, started, timeout=120)
    elapsed = time.monotonic() - started
    return elapsed, float(line.split(b"uptime=")[1].split()[0])


async def same_args_boot(spec: LaunchSpec, driver: QemuDriver) -> tuple[float, float]:
    """QEMU spawned directly with the driver's exact arguments (serial log, QMP socket)."""
    accel = driver.choose_accel(spec.kernel).accel
    args = build_qemu_args(spec, accel, driver.binary, host_tsc_khz())
    log = spec.run_dir / "serial.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    process = subprocess.Popen(args, cwd=spec.run_dir, stdin=subprocess.DEVNULL)
    try:
        return await wait_for_marker(log, started)
    finally:
        process.wait(30)


async def driver_boot(spec: LaunchSpec, driver: QemuDriver) -> tuple[float, float]:
    """The driver path: spawn (monitor + QEMU + QMP handshake) to the marker in serial.log."""
    log = spec.run_dir / "serial.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    vm = await driver.start(spec)
    try:
        return await wait_for_marker(log, started)
    finally:
        await driver.stop(vm, timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()

    kernel = KernelStore.from_environment().get()
    with tempfile.TemporaryDirectory(prefix="volant-bench-") as tmp:
        root = Path(tmp)
        initrd = assemble_initrd(root / "initrd", [busybox_initramfs(root / "bb.cpio.gz", INIT)])
        driver = QemuDriver(cache_dir=root / "cache")
        spec = LaunchSpec(
            name="bench", run_dir=root / "vm", kernel=kernel.image, initrd=initrd,
            cmdline="console=ttyS0 panic=-1 quiet", network=NetworkSpec(),
        )  # fmt: skip
        spec.run_dir.mkdir()
        accel = driver.choose_accel(kernel.image)  # probe once, outside the timings
        print(f"kernel {kernel.name} ({kernel.version}), accel {accel.accel.value}: {accel.reason}")

        baseline, same_args, via_driver = [], [], []
        for _ in range(options.runs):  # interleaved, so drift hits every side alike
            baseline.append(baseline_boot(spec, driver))
            same_args.append(asyncio.run(same_args_boot(spec, driver)))
            via_driver.append(asyncio.run(driver_boot(spec, driver)))

    def report(label: str, runs: list[tuple[float, float]]) -> float:
        host = statistics.median(run[0] for run in runs)
        guest = statistics.median(run[1] for run in runs)
        spread = ", ".join(f"{run[0]:.3f}" for run in runs)
        print(f"{label:<26} median {host:.3f} s to init (guest uptime {guest:.2f} s)  [{spread}]")
        return host

    base = report("bare QEMU (baseline)", baseline)
    direct = report("QEMU, driver's arguments", same_args)
    ours = report("QemuDriver", via_driver)
    print(f"ratio driver's arguments/baseline: {direct / base:.3f}")
    overhead_ms = 1000 * (ours - base)
    print(f"ratio driver/baseline: {ours / base:.3f}  (driver overhead {overhead_ms:+.0f} ms)")


if __name__ == "__main__":
    main()
