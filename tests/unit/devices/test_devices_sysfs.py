"""Reading PCI devices, addresses and allow-lists (a sysfs tree in a temporary folder stands in
for a KVM host's /sys: no real PCI device or IOMMU exists here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.sysfs import BRIDGE, GPU, GPU_AUDIO, LONELY, NIC, NO_IOMMU, FakeKernel
from volantd.devices import (
    AllowList,
    DeviceNotFoundError,
    InvalidDeviceError,
    PciDevice,
    Sysfs,
    parse_address,
    parse_addresses,
)
from volantd.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("0000:01:00.0", "0000:01:00.0"),
        ("01:00.1", "0000:01:00.1"),  # lspci without -D
        (" 0000:AF:1F.7 ", "0000:af:1f.7"),
        ("10DE:01:00.0", "10de:01:00.0"),  # a domain is four hex digits
    ],
)
def test_addresses_are_written_as_sysfs_names_them(text: str, address: str) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    "text", ["", "0000:01:00", "0000:01:00.8", "0000:01:20.0", "00:01:00:00.0", "x1:00.0",
             "0000:01:00.0/../..", "../../../etc"],
)  # fmt: skip
def test_anything_else_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(InvalidDeviceError, match=r"is not a PCI address like 0000:01:00\.0"):
        parse_address(text)


def test_duplicates_are_dropped_in_order() -> None:
    assert parse_addresses(["01:00.1", "0000:01:00.0", "0000:01:00.1"]) == [
        "0000:01:00.1",
        "0000:01:00.0",
    ]


def test_allow_lists_match_a_device_or_every_device_of_a_vendor() -> None:
    allowlist = AllowList.parse(["10DE:1DB6", "8086:*"])
    assert allowlist.entries == ("10de:1db6", "8086:*")
    assert allowlist.permits("10de", "1db6") and allowlist.permits("8086", "1533")
    assert not allowlist.permits("10de", "10f8")
    # an empty list: no restriction for a VM's list, nothing at all for the host's
    assert AllowList().permits("144d", "a808")
    assert not AllowList(deny_when_empty=True).permits("144d", "a808")
    with pytest.raises(InvalidDeviceError, match=r"'10de' is not 'vendor:device' or 'vendor:\*'"):
        AllowList.parse(["10de"])


def test_a_device_reads_as_the_kernel_shows_it(kernel: FakeKernel) -> None:
    sysfs = Sysfs(kernel.root)
    assert sysfs.device(GPU) == PciDevice(
        address=GPU, vendor="10de", device="1db6", class_code="030200", driver="nouveau",
        driver_override=None, iommu_group=1, numa_node=0,
    )  # fmt: skip
    assert sysfs.device(GPU).describe() == "0000:01:00.0 (10de:1db6, driver nouveau)"
    lonely = sysfs.device(LONELY)
    assert (lonely.driver, lonely.iommu_group, lonely.numa_node) == (None, 4, -1)
    assert sysfs.device(NO_IOMMU).iommu_group is None
    assert sysfs.device(BRIDGE).is_bridge and not sysfs.device(NIC).is_bridge
    assert sysfs.device_path(GPU) == kernel.root / "bus/pci/devices/0000:01:00.0"


def test_group_members_are_every_device_of_the_group(kernel: FakeKernel) -> None:
    sysfs = Sysfs(kernel.root)
    assert sysfs.group_members(1) == [BRIDGE, GPU, GPU_AUDIO]
    assert sysfs.group_members(2) == [NIC]
    assert sysfs.group_members(99) == []


def test_a_missing_device_names_its_path(kernel: FakeKernel) -> None:
    with pytest.raises(DeviceNotFoundError, match=r"no PCI device 0000:09:00\.0 on this host"):
        Sysfs(kernel.root).device("0000:09:00.0")


def test_the_daemon_settings_name_the_sysfs_root_and_the_host_allow_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VOLANT_HOME", str(tmp_path))
    settings = Settings.from_environment()
    assert (settings.sysfs_root, settings.vfio_allowlist) == (Path("/sys"), ())
    monkeypatch.setenv("VOLANT_SYSFS_ROOT", str(tmp_path / "sys"))
    monkeypatch.setenv("VOLANT_VFIO_ALLOWLIST", "10DE:*, 8086:1533")
    settings = Settings.from_environment()
    assert settings.sysfs_root == tmp_path / "sys"
    assert settings.vfio_allowlist == ("10de:*", "8086:1533")
    monkeypatch.setenv("VOLANT_VFIO_ALLOWLIST", "10de:1db6,nvidia")
    with pytest.raises(SettingsError, match=r"VOLANT_VFIO_ALLOWLIST: allow-list entry 'nvidia'"):
        Settings.from_environment()
