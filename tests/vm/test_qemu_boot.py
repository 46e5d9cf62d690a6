"""Booting the reference kernel under the QEMU microvm driver, as volantd will."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from pluginspec import GuestBoot, GuestNetwork, VMContract, VMIdentity, parse_manifest
from support.guest import (
    busybox_initramfs,
    free_port,
    load_modules_script,
    read_log,
    wait_for,
)
from volantd.boot.initrd import assemble_initrd, vm_json_files
from volantd.hypervisors import (
    LaunchSpec,
    NetworkSpec,
    PortForward,
    QemuDriver,
    VMMError,
    VMProcess,
    VMState,
    VMStatus,
)

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 120  # TCG on a loaded 2-core machine; a healthy boot takes a few seconds


def boot_contract(run_dir: Path, kernel) -> VMContract:
    """A real vm.json (pluginspec's contract model) for a test guest."""
    manifest = parse_manifest(
        {"name": "busybox-test", "version": "0.1.0", "initramfs": {"url": "plugin.cpio.gz"}}
    )
    contract = VMContract(
        vm=VMIdentity(name=run_dir.parent.name[:60], id="test-vm"),
        hostname="busybox-test",
        manifest=manifest,
        workload=None,
        network=GuestNetwork(mode="user", mac="52:54:00:12:34:56"),
        boot=GuestBoot(strategy="initramfs"),
        modules=list(kernel.modules),
        boot_epoch_ns=time.time_ns(),
    )
    return contract


def guest_initrd(run_dir: Path, kernel, init_body: str, files: dict[str, bytes] | None = None):
    """Plugin-like initramfs + the kernel's modules archive + vm.json, as DESIGN.md §2 lays out."""
    plugin = busybox_initramfs(
        run_dir / "plugin.cpio.gz", load_modules_script(kernel.modules) + init_body, files
    )
    parts = [plugin] + ([kernel.modules_cpio] if kernel.modules_cpio else [])
    return assemble_initrd(run_dir / "initrd", parts, vm_json_files(boot_contract(run_dir, kernel)))


def spec_for(run_dir: Path, kernel, initrd: Path | None, forwards=()) -> LaunchSpec:
    return LaunchSpec(
        name="test",
        run_dir=run_dir,
        kernel=kernel.image,
        initrd=initrd,
        cmdline="console=ttyS0 panic=-1 quiet",
        memory_mb=256,
        network=NetworkSpec(forwards=tuple(forwards)),
    )


def vmm_processes(run_dir: Path) -> list[psutil.Process]:
    """Processes working in `run_dir` (QEMU runs there) or naming it (its monitor)."""
    found = []
    for process in psutil.process_iter(["cwd", "cmdline"]):
        if process.info["cwd"] == str(run_dir) or str(run_dir) in " ".join(
            process.info["cmdline"] or []
        ):
            found.append(process)
    return found


def test_guest_loads_virtio_modules_gets_user_mode_address_and_powers_off(
    qemu_driver: QemuDriver, reference_kernel, run_dir: Path
):
    initrd = guest_initrd(
        run_dir,
        reference_kernel,
        textwrap.dedent("""\
            echo "volant-test: vm.json says $(tr -d ' \\n' < /etc/volant/vm.json)"
            ip link set lo up
            ip link set eth0 up
            driver=$(readlink /sys/class/net/eth0/device/driver)
            echo "volant-test: eth0 driver ${driver##*/}"
            udhcpc -i eth0 -s /bin/udhcpc-script -q -n -t 5
            echo "volant-test: $(ip -o -4 addr show dev eth0)"
            echo "volant-test: powering off"
            poweroff -f
        """),
    )

    async def boot() -> tuple[VMProcess, VMStatus]:
        vm = await qemu_driver.start(spec_for(run_dir, reference_kernel, initrd))
        qemu_driver.detach(vm)
        for _ in range(BOOT_TIMEOUT * 10):
            status = await qemu_driver.status(vm)
            if status.state in (VMState.STOPPED, VMState.CRASHED):
                return vm, status
            await asyncio.sleep(0.1)
        await qemu_driver.stop(vm, timeout=1)
        raise AssertionError(
            f"guest did not power off:\n{read_log(run_dir / 'serial.log')[-2000:]}"
        )

    _, status = asyncio.run(boot())
    log = read_log(run_dir / "serial.log")

    for module in ("virtio", "virtio_ring", "virtio_mmio", "virtio_net", "virtio_blk", "overlay"):
        if any(path.endswith(f"/{module}.ko") for path in reference_kernel.modules):
            assert f"volant-test: loaded {module}\n" in log, log
    assert "FAILED to load" not in log, log
    assert '"contract":1,' in log  # the per-VM archive reached the guest
    assert '"hostname":"busybox-test"' in log
    assert "volant-test: eth0 driver virtio_net" in log, log
    assert "volant-test: lease 10.0.2.15/24" in log, log
    assert "inet 10.0.2.15/24" in log, log
    assert "reboot: Power down" in log, log
    assert status.state is VMState.STOPPED and status.exit_code == 0, status
    assert not vmm_processes(run_dir)


def http_get(port: int, path: str = "/") -> str | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.read().decode() if response.status == 200 else None
    except OSError:
        return None


def test_guest_port_is_reachable_through_a_loopback_forward(
    qemu_driver: QemuDriver, reference_kernel, run_dir: Path
):
    host_port = free_port()
    initrd = guest_initrd(
        run_dir,
        reference_kernel,
        textwrap.dedent("""\
            ip link set lo up
            ip link set eth0 up
            udhcpc -i eth0 -s /bin/udhcpc-script -q -n -t 5
            echo "volant-test: serving"
            exec httpd -f -p 8080 -h /www
        """),
        files={"/www/index.html": b"hello from the guest\n"},
    )

    async def scenario() -> str | None:
        vm = await qemu_driver.start(
            spec_for(run_dir, reference_kernel, initrd, [PortForward(host_port, 8080)])
        )
        try:
            page = await asyncio.to_thread(
                wait_for, lambda: http_get(host_port), BOOT_TIMEOUT, "the guest's web server"
            )
        finally:
            final = await qemu_driver.stop(vm, timeout=2)
        assert final.state in (VMState.STOPPED, VMState.CRASHED)
        return page

    assert asyncio.run(scenario()) == "hello from the guest\n"
    assert "volant-test: serving" in read_log(run_dir / "serial.log")
    assert not vmm_processes(run_dir)
    assert http_get(host_port) is None  # the forward went away with the VM


OWNER_SCRIPT = """
import asyncio, sys, time
from pathlib import Path
from volantd.hypervisors import LaunchSpec, NetworkSpec, QemuDriver

async def main():
    driver = QemuDriver(accel=sys.argv[5] or None, cache_dir=Path(sys.argv[4]))
    spec = LaunchSpec(name="owned", run_dir=Path(sys.argv[1]), kernel=Path(sys.argv[2]),
                      initrd=Path(sys.argv[3]), cmdline="console=ttyS0 panic=-1 quiet",
                      network=NetworkSpec())
    vm = await driver.start(spec)
    if sys.argv[6] == "detach":
        driver.detach(vm)
        print("detached", flush=True)
        return
    print("booting", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def start_owner(run_dir: Path, kernel, initrd: Path, cache: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(run_dir), str(kernel.image), str(initrd),
         str(cache), os.environ.get("VOLANT_ACCEL", ""), mode],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_killing_the_owner_mid_boot_leaves_no_qemu_behind(
    reference_kernel, run_dir: Path, tmp_path: Path, qemu_driver: QemuDriver
):
    initrd = guest_initrd(run_dir, reference_kernel, "sleep 3600\n")
    cache = qemu_driver._cache_dir
    owner = start_owner(run_dir, reference_kernel, initrd, cache, "stay")
    try:
        # Kill the owner as soon as QEMU exists: the driver is still inside start().
        wait_for(lambda: (run_dir / "vmm.pid").exists(), 30, "QEMU to be spawned", 0.005)
        qemu_pid = int((run_dir / "vmm.pid").read_text())
        qemu = psutil.Process(qemu_pid)
        assert "qemu-system" in qemu.name()
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        wait_for(
            lambda: not psutil.pid_exists(qemu_pid) or qemu.status() == "zombie", 10, "QEMU to die"
        )
        wait_for(lambda: not vmm_processes(run_dir), 10, "the monitor to exit")
        assert "owner exited" in (run_dir / "exit.json").read_text()
    finally:
        if owner.poll() is None:
            owner.kill()
        for process in vmm_processes(run_dir):
            process.kill()


def test_detached_vm_outlives_its_owner_and_a_new_driver_attaches_and_stops_it(
    reference_kernel, run_dir: Path, qemu_driver: QemuDriver
):
    initrd = guest_initrd(run_dir, reference_kernel, 'echo "volant-test: up"\nexec sh\n')
    owner = start_owner(run_dir, reference_kernel, initrd, qemu_driver._cache_dir, "detach")
    try:
        assert owner.stdout.readline().strip() == "detached"
        assert owner.wait(10) == 0

        async def reattach():
            vm = await qemu_driver.attach("owned", run_dir)
            assert vm is not None, "the VM died with its owner"
            assert (await qemu_driver.status(vm)).state is VMState.RUNNING
            await asyncio.to_thread(
                wait_for, lambda: "volant-test: up" in read_log(run_dir / "serial.log"),
                BOOT_TIMEOUT, "the guest to boot",
            )  # fmt: skip
            # The serial console socket is live: a shell on it answers.
            reader, writer = await asyncio.open_unix_connection(run_dir / "console.sock")
            writer.write(b"echo console-$((6*7))\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readuntil(b"console-42"), BOOT_TIMEOUT)
            writer.close()
            assert answer.endswith(b"console-42")
            return await qemu_driver.stop(vm, timeout=1)

        final = asyncio.run(reattach())
        assert final.state in (VMState.STOPPED, VMState.CRASHED)
        assert not vmm_processes(run_dir)
        assert asyncio.run(qemu_driver.attach("owned", run_dir)) is None
    finally:
        for process in vmm_processes(run_dir):
            process.kill()


def test_a_forward_onto_a_busy_port_fails_with_the_reason_and_leaves_nothing(
    qemu_driver: QemuDriver, reference_kernel, run_dir: Path
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = spec_for(run_dir, reference_kernel, None, [PortForward(port, 8080)])
        with pytest.raises(VMMError, match=f"Could not set up host forwarding rule.*:{port}-:8080"):
            asyncio.run(qemu_driver.start(spec))
    assert not vmm_processes(run_dir)
