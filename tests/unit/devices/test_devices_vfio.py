"""Binding one device to vfio-pci and giving it back (a fake sysfs tree and kernel stand in
for a KVM host: no real PCI device or IOMMU exists here)."""

from __future__ import annotations

import pytest

from support.sysfs import GPU, LONELY, NIC, FakeKernel, ReactingSysfs
from volantd.devices import DeviceConflictError, DeviceOperationError, Sysfs, VfioBinder


def test_bind_overrides_unbinds_and_reprobes_then_give_back_restores(
    kernel: FakeKernel, sysfs: ReactingSysfs
) -> None:
    binder = VfioBinder(sysfs)
    assert binder.bind(NIC) == "igb"
    assert (kernel.driver_of(NIC), kernel.override_of(NIC)) == ("vfio-pci", "vfio-pci")
    assert kernel.writes == [
        ("bus/pci/drivers/igb/unbind", NIC),
        ("bus/pci/drivers_probe", NIC),
    ]
    assert binder.give_back(NIC, "igb") == "igb"
    assert (kernel.driver_of(NIC), kernel.override_of(NIC)) == ("igb", None)
    assert kernel.writes[2:] == [
        ("bus/pci/drivers/vfio-pci/unbind", NIC),
        ("bus/pci/drivers_probe", NIC),
    ]
    assert not any(path.endswith("new_id") for path, _ in kernel.writes)  # upstream's side effect


def test_both_directions_are_safe_to_repeat(kernel: FakeKernel, sysfs: ReactingSysfs) -> None:
    binder = VfioBinder(sysfs)
    binder.bind(NIC)
    assert binder.bind(NIC) == "vfio-pci"  # already there: nothing written
    assert len(kernel.writes) == 2
    binder.give_back(NIC, "igb")
    assert binder.give_back(NIC, "igb") == "igb"
    assert len(kernel.writes) == 4


def test_a_device_without_driver_goes_back_to_none(
    kernel: FakeKernel, sysfs: ReactingSysfs
) -> None:
    binder = VfioBinder(sysfs)
    assert binder.bind(LONELY) is None
    assert kernel.driver_of(LONELY) == "vfio-pci"
    assert binder.give_back(LONELY, None) is None
    assert (kernel.driver_of(LONELY), kernel.override_of(LONELY)) == (None, None)


def test_a_device_found_on_vfio_pci_stays_there(kernel: FakeKernel, sysfs: ReactingSysfs) -> None:
    binder = VfioBinder(sysfs)
    binder.bind(NIC)
    assert binder.give_back(NIC, "vfio-pci") == "vfio-pci"
    assert kernel.driver_of(NIC) == "vfio-pci"


def test_without_vfio_pci_loaded_nothing_is_touched(kernel: FakeKernel) -> None:
    kernel.remove_driver("vfio-pci")
    with pytest.raises(DeviceConflictError, match=r"vfio-pci driver is not loaded.*modprobe"):
        VfioBinder(ReactingSysfs(kernel)).bind(GPU)
    assert (kernel.driver_of(GPU), kernel.override_of(GPU), kernel.writes) == ("nouveau", None, [])


def test_a_kernel_that_does_not_react_leaves_the_device_with_its_driver(
    kernel: FakeKernel,
) -> None:
    # Nothing plays the kernel: the unbind is never carried out, the wait gives up, and the
    # device keeps its driver with the override cleared again.
    silent = Sysfs(kernel.root, settle_s=0.05)
    with pytest.raises(DeviceOperationError, match=r"waiting for igb to let go of 0000:02:00\.0"):
        VfioBinder(silent).bind(NIC)
    assert (kernel.driver_of(NIC), kernel.override_of(NIC)) == ("igb", None)


def test_a_device_unplugged_meanwhile_is_no_error(kernel: FakeKernel, sysfs: ReactingSysfs) -> None:
    assert VfioBinder(sysfs).give_back("0000:0a:00.0", "igb") is None


def test_a_refused_write_says_so(kernel: FakeKernel) -> None:
    (kernel.root / "bus" / "pci" / "drivers_probe").unlink()
    with pytest.raises(DeviceOperationError, match=r"cannot open .*drivers_probe for writing"):
        VfioBinder(ReactingSysfs(kernel)).bind(LONELY)
    assert (kernel.driver_of(LONELY), kernel.override_of(LONELY)) == (None, None)
