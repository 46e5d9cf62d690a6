"""How the QEMU driver turns a launch spec into a QEMU command line."""

from pathlib import Path

import pytest

from volantd.hypervisors import (
    Accel,
    DiskSpec,
    LaunchSpec,
    NetworkMode,
    NetworkSpec,
    PortForward,
    QemuDriver,
    VMMError,
    build_qemu_args,
)


def spec(**overrides) -> LaunchSpec:
    values = {
        "name": "web",
        "run_dir": Path("/var/lib/volant/run/web"),
        "kernel": Path("/k/vmlinuz"),
        "initrd": Path("/r/initrd"),
        "cmdline": "console=ttyS0 panic=-1",
        "cpus": 2,
        "memory_mb": 512,
    }
    return LaunchSpec(**(values | overrides))


def option(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == flag]


def test_microvm_direct_boot_with_initrd_and_resources():
    args = build_qemu_args(spec(), Accel.TCG)
    assert option(args, "-M") == ["microvm"]
    assert option(args, "-kernel") == ["/k/vmlinuz"]
    assert option(args, "-initrd") == ["/r/initrd"]
    assert option(args, "-smp") == ["2"]
    assert option(args, "-m") == ["512M"]
    assert "-no-reboot" in args and "-nodefaults" in args


def test_kvm_uses_host_cpu_and_tcg_uses_max():
    assert option(build_qemu_args(spec(), Accel.KVM), "-cpu") == ["host"]
    assert option(build_qemu_args(spec(), Accel.KVM), "-accel") == ["kvm"]
    assert option(build_qemu_args(spec(), Accel.TCG), "-cpu") == ["max,erms=off,fsrm=off"]


def test_tcg_passes_the_host_tsc_frequency_and_kvm_does_not():
    tcg = option(build_qemu_args(spec(), Accel.TCG, tsc_khz=2100000), "-append")[0]
    kvm = option(build_qemu_args(spec(), Accel.KVM, tsc_khz=2100000), "-append")[0]
    assert tcg == "console=ttyS0 panic=-1 tsc_early_khz=2100000"
    assert kvm == "console=ttyS0 panic=-1"


def test_a_user_supplied_tsc_frequency_wins():
    args = build_qemu_args(spec(cmdline="console=ttyS0 tsc_early_khz=5"), Accel.TCG, tsc_khz=9)
    assert option(args, "-append") == ["console=ttyS0 tsc_early_khz=5"]


def test_serial_goes_to_a_socket_and_a_log_and_qmp_to_a_socket_in_the_run_dir():
    args = build_qemu_args(spec(), Accel.TCG)
    chardev = option(args, "-chardev")[0]
    assert chardev.startswith("socket,id=console,path=console.sock,server=on,wait=off")
    assert "logfile=serial.log" in chardev
    assert option(args, "-serial") == ["chardev:console"]
    assert option(args, "-qmp") == ["unix:qmp.sock,server=on,wait=off"]


def test_user_networking_forwards_loopback_ports_only():
    forwards = (PortForward(18080, 8080), PortForward(15353, 53, protocol="udp"))
    args = build_qemu_args(spec(network=NetworkSpec(forwards=forwards)), Accel.TCG)
    netdev = option(args, "-netdev")[0]
    assert netdev == (
        "user,id=net0,hostfwd=tcp:127.0.0.1:18080-:8080,hostfwd=udp:127.0.0.1:15353-:53"
    )
    assert option(args, "-device") == ["virtio-net-device,netdev=net0,mac=52:54:00:12:34:56"]


def test_isolated_mode_restricts_the_guest_but_keeps_forwards():
    network = NetworkSpec(mode=NetworkMode.ISOLATED, forwards=(PortForward(1, 2),))
    netdev = option(build_qemu_args(spec(network=network), Accel.TCG), "-netdev")[0]
    assert netdev.startswith("user,id=net0,restrict=on,")
    assert "hostfwd=tcp:127.0.0.1:1-:2" in netdev


def test_no_network_means_no_nic():
    args = build_qemu_args(spec(network=None), Accel.TCG)
    assert "-netdev" not in args and "-device" not in args
    args = build_qemu_args(spec(network=NetworkSpec(mode=NetworkMode.NONE)), Accel.TCG)
    assert "-netdev" not in args


def test_prepare_names_a_missing_kernel(tmp_path: Path):
    driver = QemuDriver(binary="/bin/true")
    with pytest.raises(
        VMMError, match=r"kernel .*/nope does not exist: run `volantd kernels fetch`"
    ):
        driver.prepare(spec(run_dir=tmp_path, kernel=tmp_path / "nope"))


def test_prepare_refuses_a_run_dir_too_deep_for_unix_sockets(tmp_path: Path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    deep = tmp_path / ("d" * 120)
    driver = QemuDriver(binary="/bin/true")
    with pytest.raises(VMMError, match="too deep for unix sockets"):
        driver.prepare(spec(run_dir=deep, kernel=kernel, initrd=None))
    assert not deep.exists()


def test_tcg_clock_parameter_stays_before_the_init_arguments() -> None:
    args = build_qemu_args(spec(cmdline="quiet rdinit=/bin/sleep -- 1000"), Accel.TCG, tsc_khz=7)
    assert option(args, "-append") == ["quiet rdinit=/bin/sleep tsc_early_khz=7 -- 1000"]


def test_disks_are_virtio_blk_devices_on_drives_without_a_controller_in_order():
    disks = (
        DiskSpec(Path("/run/web/root.qcow2"), "qcow2", name="root"),
        DiskSpec(Path("/cache/sha256/abc"), "raw", readonly=True, name="data"),
    )
    args = build_qemu_args(spec(disks=disks, network=None), Accel.TCG)
    assert option(args, "-drive") == [
        "file=/run/web/root.qcow2,if=none,id=disk0,format=qcow2,cache=writeback,discard=unmap",
        "file=/cache/sha256/abc,if=none,id=disk1,format=raw,cache=writeback,read-only=on",
    ]
    assert option(args, "-device") == [
        "virtio-blk-device,drive=disk0",
        "virtio-blk-device,drive=disk1",
    ]


def test_a_comma_in_a_disk_path_is_escaped_for_qemu():
    disk = DiskSpec(Path("/srv/a,b/root.qcow2"), "qcow2")
    drive = option(build_qemu_args(spec(disks=(disk,)), Accel.TCG), "-drive")[0]
    assert drive.startswith("file=/srv/a,,b/root.qcow2,if=none,")


def test_no_disks_means_no_drive():
    assert "-drive" not in build_qemu_args(spec(), Accel.TCG)


def test_prepare_names_a_missing_disk_and_an_unknown_format(tmp_path: Path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    driver = QemuDriver(binary="/bin/true")
    missing = DiskSpec(tmp_path / "root.qcow2", "qcow2", name="root")
    with pytest.raises(VMMError, match=r"disk root of VM web: .*root.qcow2 does not exist"):
        driver.prepare(spec(run_dir=tmp_path / "vm", kernel=kernel, initrd=None, disks=(missing,)))
    odd = tmp_path / "disk.vmdk"
    odd.write_bytes(b"d")
    with pytest.raises(VMMError, match="format 'vmdk' is not one of raw, qcow2"):
        driver.prepare(
            spec(run_dir=tmp_path / "vm", kernel=kernel, initrd=None,
                 disks=(DiskSpec(odd, "vmdk"),))
        )  # fmt: skip


def test_microvm_guests_need_the_block_driver_only_with_disks():
    driver = QemuDriver(binary="/bin/true")
    assert "virtio_blk" not in driver.guest_drivers(network=True)
    assert driver.guest_drivers(network=False, disks=1) == ("virtio_mmio", "virtio_blk")
