"""The Cloud Hypervisor driver: the VM config it sends, the API calls it makes (checked against
a fake `cloud-hypervisor` that serves CH's REST API on its unix socket, under the real VM
monitor), its availability and the kernels it boots."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from support.ch import bzimage, calls, elf_kernel, endpoints, fake_binary
from volantd import vmm_monitor as monitor
from volantd.hypervisors import (
    CloudHypervisorDriver,
    DiskSpec,
    LaunchSpec,
    NetworkMode,
    NetworkSpec,
    VMMError,
    VMState,
    VsockSpec,
    build_vm_config,
    vsock_cid_for,
)
from volantd.hypervisors.cloud_hypervisor_api import check_version, parse_version

MIB = 1024 * 1024


def spec(**overrides: object) -> LaunchSpec:
    values: dict[str, object] = {
        "name": "web",
        "run_dir": Path("/var/lib/volant/run/web"),
        "kernel": Path("/k/vmlinuz"),
        "initrd": Path("/r/initrd"),
        "cmdline": "console=ttyS0 panic=-1",
        "cpus": 2,
        "memory_mb": 512,
        "network": None,
    }
    return LaunchSpec(**(values | overrides))  # type: ignore[arg-type]


# -- the VM config (vm.create's body) -------------------------------------------------------


def test_the_config_boots_the_pvh_kernel_with_initramfs_cmdline_and_resources():
    config = build_vm_config(spec(), Path("/cache/k.vmlinux"), Path("/run/web"))
    assert config == {
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
        "memory": {"size": 512 * MIB},
        "payload": {
            "kernel": "/cache/k.vmlinux",
            "cmdline": "console=ttyS0 panic=-1",
            "initramfs": "/r/initrd",
        },
        "serial": {"mode": "Socket", "socket": "/run/web/serial.sock"},
        "console": {"mode": "Off"},
    }


def test_disks_keep_their_order_format_and_read_only_flag():
    disks = (
        DiskSpec(Path("/run/web/root.qcow2"), "qcow2", name="root"),
        DiskSpec(Path("/cache/sha256/ab"), "raw", readonly=True, name="data"),
    )
    config = build_vm_config(spec(disks=disks), Path("/k"), Path("/run/web"))
    assert config["disks"] == [
        {"path": "/run/web/root.qcow2", "readonly": False, "image_type": "Qcow2",
         "backing_files": True},
        {"path": "/cache/sha256/ab", "readonly": True, "image_type": "Raw",
         "backing_files": False},
    ]  # fmt: skip


def test_a_tap_nic_hybrid_vsock_and_vfio_devices():
    config = build_vm_config(
        spec(
            network=NetworkSpec(NetworkMode.TAP, mac="52:54:00:aa:bb:cc", tap="vt-web"),
            vsock=VsockSpec(vsock_cid_for(7), Path("/run/web/vsock.sock")),
            devices=(Path("/sys/bus/pci/devices/0000:01:00.0"),),
        ),
        Path("/k"),
        Path("/run/web"),
    )
    assert config["net"] == [{"tap": "vt-web", "mac": "52:54:00:aa:bb:cc"}]
    assert config["vsock"] == {"cid": 10, "socket": "/run/web/vsock.sock"}
    assert config["devices"] == [{"path": "/sys/bus/pci/devices/0000:01:00.0"}]


def test_no_nic_without_a_network_and_none_for_user_mode_networking():
    assert "net" not in build_vm_config(spec(network=NetworkSpec(NetworkMode.NONE)), Path("/k"),
                                        Path("/r"))  # fmt: skip
    for mode in (NetworkMode.USER, NetworkMode.ISOLATED):
        with pytest.raises(VMMError, match="no user-mode networking"):
            build_vm_config(spec(network=NetworkSpec(mode)), Path("/k"), Path("/r"))


def test_vsock_cids_are_three_plus_the_vm_id():
    assert [vsock_cid_for(vm_id) for vm_id in (0, 1, 41)] == [3, 4, 44]
    with pytest.raises(ValueError, match="no vsock CID"):
        vsock_cid_for(-1)


def test_versions_older_than_50_1_are_refused():
    assert parse_version("v50.1") == (50, 1) and parse_version("51.0.0-dirty") == (51, 0)
    check_version({"version": "50.1.0"})
    check_version({"version": "a build without a number"})
    with pytest.raises(VMMError, match=r"49.0.0 is too old: volantd needs v50.1"):
        check_version({"version": "49.0.0"})


# -- availability ---------------------------------------------------------------------------


@pytest.fixture
def kvm(tmp_path: Path) -> Path:
    """A file standing in for a /dev/kvm that opens read-write."""
    device = tmp_path / "kvm"
    device.touch()
    return device


def test_without_the_binary_the_driver_is_unavailable_and_says_why(tmp_path, monkeypatch, kvm):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CLOUDHYPERVISOR", raising=False)
    capabilities = CloudHypervisorDriver(kvm_device=kvm).capabilities()
    assert not capabilities.available
    assert "cloud-hypervisor is not on PATH and CLOUDHYPERVISOR is not set" in capabilities.reason
    monkeypatch.setenv("CLOUDHYPERVISOR", str(tmp_path / "nope"))
    capabilities = CloudHypervisorDriver(kvm_device=kvm).capabilities()
    assert not capabilities.available and "CLOUDHYPERVISOR=" in capabilities.reason


def test_the_binary_comes_from_cloudhypervisor_or_path(tmp_path, monkeypatch, kvm):
    binary = fake_binary(tmp_path)
    monkeypatch.setenv("CLOUDHYPERVISOR", str(binary))
    assert CloudHypervisorDriver(kvm_device=kvm).binary == str(binary)
    monkeypatch.delenv("CLOUDHYPERVISOR")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert CloudHypervisorDriver(kvm_device=kvm).binary == str(binary)


def test_without_kvm_the_driver_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.delenv("VOLANT_ACCEL", raising=False)
    driver = CloudHypervisorDriver(str(fake_binary(tmp_path)), kvm_device=tmp_path / "no-kvm")
    capabilities = driver.capabilities()
    assert not capabilities.available
    assert "does not exist (no KVM on this host): Cloud Hypervisor needs KVM" in capabilities.reason
    forced = CloudHypervisorDriver(str(fake_binary(tmp_path)), accel="tcg")
    assert "VOLANT_ACCEL=tcg" in forced.capabilities().reason


def test_an_available_driver_offers_vsock_vfio_and_hotplug_but_no_user_networking(tmp_path, kvm):
    driver = CloudHypervisorDriver(str(fake_binary(tmp_path)), tmp_path, "kvm", kvm)
    capabilities = driver.capabilities()
    assert capabilities.available and capabilities.name == "cloud-hypervisor"
    assert (capabilities.vsock, capabilities.vfio, capabilities.hotplug) == (True, True, True)
    assert capabilities.user_networking is False
    assert driver.guest_drivers(network=True, disks=1) == (
        "virtio_pci", "virtio_net", "virtio_blk", "vmw_vsock_virtio_transport",
    )  # fmt: skip


def test_the_kvm_probe_boots_a_guest_once_and_its_verdict_is_cached(tmp_path, monkeypatch, kvm):
    monkeypatch.delenv("VOLANT_ACCEL", raising=False)
    driver = CloudHypervisorDriver(str(fake_binary(tmp_path)), tmp_path / "cache", None, kvm)
    assert "not proven yet" in driver.capabilities().reason
    driver.require_kvm(elf_kernel(tmp_path / "vmlinux"))
    capabilities = driver.capabilities()
    assert capabilities.available and "KVM booted the guest kernel" in capabilities.reason
    assert capabilities.reason.endswith("(cached)")


def test_a_failed_kvm_probe_makes_the_driver_unavailable(tmp_path, monkeypatch, kvm):
    monkeypatch.delenv("VOLANT_ACCEL", raising=False)
    monkeypatch.setenv("FAKE_CH_PROBE", "fail")
    driver = CloudHypervisorDriver(str(fake_binary(tmp_path)), tmp_path / "cache", None, kvm)
    with pytest.raises(VMMError, match="cannot run VMs on this host: KVM probe: Cloud Hyper"):
        driver.require_kvm(elf_kernel(tmp_path / "vmlinux"))
    capabilities = driver.capabilities()
    assert not capabilities.available and "exited early" in capabilities.reason


# -- kernels --------------------------------------------------------------------------------


def test_a_pvh_vmlinux_is_booted_as_it_is(tmp_path):
    kernel = elf_kernel(tmp_path / "vmlinux")
    assert CloudHypervisorDriver(cache_dir=tmp_path).boot_kernel(kernel) == kernel


def test_a_kernel_without_a_pvh_entry_is_refused(tmp_path):
    kernel = elf_kernel(tmp_path / "vmlinux", pvh=False)
    with pytest.raises(VMMError, match="no PVH entry point"):
        CloudHypervisorDriver(cache_dir=tmp_path).boot_kernel(kernel)


def test_the_vmlinux_inside_a_bzimage_is_unpacked_once_into_the_cache(tmp_path):
    inner = elf_kernel(tmp_path / "inner").read_bytes()
    kernel = bzimage(tmp_path / "vmlinuz", inner)
    driver = CloudHypervisorDriver(cache_dir=tmp_path / "cache")
    vmlinux = driver.boot_kernel(kernel)
    assert vmlinux.parent == tmp_path / "cache" / "pvh-kernels"
    assert vmlinux.read_bytes() == inner
    written = vmlinux.stat().st_mtime_ns
    assert driver.boot_kernel(kernel) == vmlinux and vmlinux.stat().st_mtime_ns == written


def test_an_old_bzimage_without_a_payload_pointer_is_refused(tmp_path):
    kernel = bzimage(tmp_path / "vmlinuz", b"x", protocol=0x0206)
    with pytest.raises(VMMError, match=r"boot protocol 2\.06"):
        CloudHypervisorDriver(cache_dir=tmp_path).boot_kernel(kernel)


# -- the life cycle, against the fake VMM ---------------------------------------------------


@pytest.fixture
def driver(tmp_path: Path, kvm: Path) -> CloudHypervisorDriver:
    return CloudHypervisorDriver(str(fake_binary(tmp_path)), tmp_path / "cache", "kvm", kvm)


@pytest.fixture
def vm_spec(tmp_path: Path) -> Iterator[LaunchSpec]:
    run_dir = tmp_path / "vm"
    kernel = elf_kernel(tmp_path / "vmlinux")
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"cpio")
    disk = tmp_path / "data.raw"
    disk.write_bytes(b"\0" * 4096)
    yield LaunchSpec(
        name="web", run_dir=run_dir, kernel=kernel, initrd=initrd, cpus=1, memory_mb=128,
        network=NetworkSpec(NetworkMode.TAP, mac="52:54:00:00:00:01", tap="vt-web"),
        disks=(DiskSpec(disk, "raw", readonly=True, name="data"),),
        vsock=VsockSpec(4, run_dir / "vsock.sock"),
    )  # fmt: skip
    leftover = run_dir / monitor.MONITOR_PID_FILE
    if leftover.exists():  # a failed test must not leave its VMM behind
        for pid_file in (monitor.VMM_PID_FILE, monitor.MONITOR_PID_FILE):
            pid = int((run_dir / pid_file).read_text())
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def serial_log(run_dir: Path) -> str:
    return (run_dir / "serial.log").read_text(errors="replace")


def test_start_creates_then_boots_the_vm_through_the_api(driver, vm_spec):
    async def main() -> None:
        vm = await driver.start(vm_spec)
        try:
            run_dir = vm_spec.run_dir
            assert endpoints(run_dir)[-2:] == ["PUT vm.create", "PUT vm.boot"]
            assert endpoints(run_dir)[-3] == "GET vmm.ping"
            (create,) = [call for call in calls(run_dir) if call["endpoint"] == "vm.create"]
            vmlinux = str(vm_spec.kernel)
            assert create["body"] == build_vm_config(vm_spec, Path(vmlinux), run_dir.resolve())
            assert create["body"]["payload"]["kernel"] == vmlinux
            assert json.loads((run_dir / "vm-config.json").read_text()) == create["body"]
            assert psutil.Process(vm.pid).cwd() == str(run_dir.resolve())
            assert vm.accel.value == "kvm" and vm.bound
            status = await driver.status(vm)
            assert (status.state, status.detail) == (VMState.RUNNING, "Running")
            assert endpoints(run_dir)[-1] == "GET vm.info"
        finally:
            await driver.stop(vm, timeout=0.5)

    asyncio.run(main())


def test_the_guest_console_is_logged_and_served_on_console_sock(driver, vm_spec):
    async def main() -> None:
        vm = await driver.start(vm_spec)
        run_dir = vm_spec.run_dir
        try:
            wait_for(lambda: "fake guest booted" in serial_log(run_dir))
            assert serial_log(run_dir).startswith("Linux version 6.1.0-fake")
            with socket.socket(socket.AF_UNIX) as console:
                console.connect(str(run_dir / "console.sock"))
                console.sendall(b"uname\n")
                console.settimeout(5)
                assert console.recv(100) == b"echo: uname\n"
            wait_for(lambda: "echo: uname" in serial_log(run_dir))
        finally:
            await driver.stop(vm, timeout=0.5)

    asyncio.run(main())


def test_stop_presses_the_power_button_then_shuts_the_vmm_down(driver, vm_spec):
    async def main() -> None:
        vm = await driver.start(vm_spec)
        status = await driver.stop(vm, timeout=0.3)  # the fake's guest ignores the button
        assert (status.state, status.exit_code) == (VMState.STOPPED, 0)
        assert endpoints(vm_spec.run_dir)[-2:] == ["PUT vm.power-button", "PUT vmm.shutdown"]
        assert not driver.alive(vm) and not psutil.pid_exists(vm.monitor_pid)
        assert "power button pressed" in serial_log(vm_spec.run_dir)  # logged to the end

    asyncio.run(main())


def test_a_guest_that_powers_off_on_the_button_needs_nothing_more(driver, vm_spec, monkeypatch):
    monkeypatch.setenv("FAKE_CH_POWER_OFF", "1")

    async def main() -> None:
        vm = await driver.start(vm_spec)
        status = await driver.stop(vm, timeout=10)
        assert status.state is VMState.STOPPED
        assert endpoints(vm_spec.run_dir)[-1] == "PUT vm.power-button"

    asyncio.run(main())


def test_a_detached_vm_is_found_again_by_a_new_driver(driver, vm_spec, tmp_path, kvm):
    async def main() -> None:
        vm = await driver.start(vm_spec)
        driver.detach(vm)
        again = CloudHypervisorDriver(str(fake_binary(tmp_path)), tmp_path / "cache", "kvm", kvm)
        found = await again.attach("web", vm_spec.run_dir)
        assert found is not None and (found.pid, found.monitor_pid) == (vm.pid, vm.monitor_pid)
        assert (await again.status(found)).state is VMState.RUNNING
        assert (await again.stop(found, timeout=0.3)).state is VMState.STOPPED
        assert await again.attach("web", vm_spec.run_dir) is None

    asyncio.run(main())


def test_a_refused_create_fails_the_start_with_chs_message_and_leaves_nothing(
    driver, vm_spec, monkeypatch
):
    monkeypatch.setenv("FAKE_CH_REFUSE", "vm.create")

    async def main() -> None:
        with pytest.raises(VMMError, match=r"vm\.create: HTTP 400: Error from the fake"):
            await driver.start(vm_spec)
        run_dir = vm_spec.run_dir
        vmm = int((run_dir / monitor.VMM_PID_FILE).read_text())
        watcher = int((run_dir / monitor.MONITOR_PID_FILE).read_text())
        assert not psutil.pid_exists(vmm) and not psutil.pid_exists(watcher)
        assert "PUT vm.boot" not in endpoints(run_dir)

    asyncio.run(main())


def test_an_old_cloud_hypervisor_is_refused_before_creating_anything(driver, vm_spec, monkeypatch):
    monkeypatch.setenv("FAKE_CH_VERSION", "40.0")

    async def main() -> None:
        with pytest.raises(VMMError, match=r"40\.0 is too old"):
            await driver.start(vm_spec)
        assert endpoints(vm_spec.run_dir) == ["GET vmm.ping"] * len(endpoints(vm_spec.run_dir))

    asyncio.run(main())


def test_a_user_mode_nic_is_refused_before_anything_runs(driver, vm_spec):
    with pytest.raises(VMMError, match="no user-mode networking"):
        driver.prepare(replace(vm_spec, network=NetworkSpec(NetworkMode.USER)))
