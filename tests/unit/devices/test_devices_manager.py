"""Which devices a VM or an operator may take, who holds them, and giving them back.

A fake sysfs tree and kernel (tests/support/sysfs.py) stand in for a KVM host with an
IOMMU: no real PCI device or IOMMU exists on the machines these tests run on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.sysfs import (
    BRIDGE,
    GPU,
    GPU_AUDIO,
    LONELY,
    NIC,
    NO_IOMMU,
    NVME,
    FakeKernel,
    ReactingSysfs,
)
from volantd.devices import (
    AllowList,
    DeviceConflictError,
    DeviceManager,
    DeviceNotAllowedError,
    DeviceNotFoundError,
    InvalidDeviceError,
    Sysfs,
)
from volantd.store import ConflictError, Database, PluginRecord, VMRecord


def record_vm(db: Database, name: str) -> None:
    db.plugins.add(PluginRecord(name="gpu", version="1", runtime="gpu", manifest={}))
    db.vms.create(
        VMRecord(name=name, plugin="gpu", runtime="gpu", status="running", cpu_cores=1,
                 memory_mb=256, mac_address="02:56:00:00:00:01", network_mode="user",
                 hypervisor="cloud-hypervisor", run_dir=Path("/nonexistent") / name),
        {"name": name},
    )  # fmt: skip


def drivers(kernel: FakeKernel, *addresses: str) -> list[str | None]:
    return [kernel.driver_of(address) for address in addresses]


# -- a VM's devices ------------------------------------------------------------------------


def test_a_vm_takes_a_whole_group_and_gives_it_back(
    manager: DeviceManager, kernel: FakeKernel, db: Database
) -> None:
    paths = manager.acquire("gpu-vm", ["01:00.0", "0000:01:00.1"])
    assert paths == (kernel.device_dir(GPU), kernel.device_dir(GPU_AUDIO))
    assert drivers(kernel, GPU, GPU_AUDIO, BRIDGE) == ["vfio-pci", "vfio-pci", "pcieport"]
    claims = db.device_claims.held_by("gpu-vm")
    assert [(c.address, c.original_driver) for c in claims] == [
        (GPU, "nouveau"),
        (GPU_AUDIO, "snd_hda_intel"),
    ]
    assert manager.release("gpu-vm") == []
    assert drivers(kernel, GPU, GPU_AUDIO) == ["nouveau", "snd_hda_intel"]
    assert db.device_claims.all() == []


def test_a_second_start_changes_nothing(manager: DeviceManager, kernel: FakeKernel) -> None:
    first = manager.acquire("nic-vm", [NIC])
    writes = len(kernel.writes)
    assert manager.acquire("nic-vm", [NIC]) == first
    assert len(kernel.writes) == writes


def test_a_device_held_by_one_vm_is_refused_to_another_naming_it(
    manager: DeviceManager, kernel: FakeKernel
) -> None:
    manager.acquire("nic-vm", [NIC])
    with pytest.raises(DeviceConflictError, match=r'0000:02:00\.0 is claimed by vm "nic-vm"'):
        manager.acquire("other-vm", [LONELY, NIC])
    assert drivers(kernel, LONELY, NIC) == [None, "vfio-pci"]  # nothing of other-vm's bound
    manager.release("other-vm")  # holds nothing: a no-op
    assert kernel.driver_of(NIC) == "vfio-pci"


def test_the_store_refuses_a_race_the_checks_did_not_see(
    manager: DeviceManager, kernel: FakeKernel, db: Database
) -> None:
    # another volantd sharing the store claimed it between the check and the claim
    real_check = manager.check

    def check_then_lose_the_race(*args: object, **kwargs: object) -> object:
        devices = real_check(*args, **kwargs)  # type: ignore[arg-type]
        db.device_claims.claim("elsewhere", {NIC: "igb"})
        return devices

    manager.check = check_then_lose_the_race  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match=r'claimed by vm "elsewhere"'):
        manager.acquire("nic-vm", [NIC])
    assert kernel.driver_of(NIC) == "igb"


def test_part_of_a_group_is_refused_while_the_host_drives_the_rest(
    manager: DeviceManager, kernel: FakeKernel
) -> None:
    with pytest.raises(
        DeviceConflictError,
        match=r"0000:01:00\.0 shares IOMMU group 1 with 0000:01:00\.1 \(10de:10f8, driver "
        r"snd_hda_intel\): VFIO passes whole groups, so pass 0000:01:00\.1 too or unbind it "
        r"from snd_hda_intel first",
    ):
        manager.acquire("gpu-vm", [GPU])
    assert drivers(kernel, GPU, GPU_AUDIO) == ["nouveau", "snd_hda_intel"]
    # the bridge of the group was no obstacle, and a member without driver is none either
    kernel.add_driver("snd_hda_intel")
    manager.sysfs.write(kernel.driver_dir("snd_hda_intel") / "unbind", GPU_AUDIO)
    manager.acquire("gpu-vm", [GPU])
    assert drivers(kernel, GPU, GPU_AUDIO) == ["vfio-pci", None]


def test_a_group_goes_to_one_vm_only(manager: DeviceManager) -> None:
    manager.acquire("gpu-vm", [GPU, GPU_AUDIO])
    manager.release("gpu-vm")
    manager.acquire("audio-vm", [GPU_AUDIO, GPU])
    manager.release("audio-vm")
    manager.acquire("gpu-vm", [GPU, GPU_AUDIO])
    manager.db.device_claims.release(GPU)  # as if gpu-vm only held the audio function
    with pytest.raises(
        DeviceConflictError,
        match=r'0000:01:00\.0 shares IOMMU group 1 with 0000:01:00\.1, which vm "gpu-vm" holds',
    ):
        manager.acquire("thief", [GPU])


@pytest.mark.parametrize(
    ("addresses", "error", "message"),
    [
        (["0000:01:00.0/../.."], InvalidDeviceError, r"is not a PCI address like 0000:01:00\.0"),
        ([], InvalidDeviceError, "no PCI address given"),
        (["0000:09:00.0"], DeviceNotFoundError, r"no PCI device 0000:09:00\.0 on this host"),
        ([BRIDGE], InvalidDeviceError, r"0000:00:01\.0 \(8086:1901, driver pcieport\) is a PCI "
                                       r"bridge: bridges stay with the host"),
        ([NVME], DeviceNotAllowedError, r"0000:03:00\.0 \(144d:a808, driver nvme\) is not in "
                                        r"volantd's VFIO allow-list .*add 144d:a808 to "
                                        r"VOLANT_VFIO_ALLOWLIST"),
        ([NO_IOMMU], DeviceConflictError, r"0000:05:00\.0 has no IOMMU group: the host's IOMMU "
                                          r"is off .*intel_iommu=on"),
    ],
)  # fmt: skip
def test_what_cannot_be_taken_is_named(
    manager: DeviceManager,
    kernel: FakeKernel,
    addresses: list[str],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        manager.acquire("vm-1", addresses)
    assert kernel.writes == []


def test_an_empty_host_allow_list_turns_passthrough_off(
    db: Database, sysfs: ReactingSysfs, kernel: FakeKernel
) -> None:
    manager = DeviceManager(db, sysfs)  # VOLANT_VFIO_ALLOWLIST unset
    with pytest.raises(
        DeviceNotAllowedError,
        match=r"VOLANT_VFIO_ALLOWLIST is empty, so passthrough is off .* e\.g\. "
        r"VOLANT_VFIO_ALLOWLIST=8086:1533 \(or 8086:\*\)",
    ):
        manager.acquire("nic-vm", [NIC])
    assert kernel.writes == []


def test_a_vm_config_allow_list_narrows_the_hosts(manager: DeviceManager) -> None:
    with pytest.raises(InvalidDeviceError, match=r"not in the allow-list given with the devices"):
        manager.acquire("nic-vm", [NIC], AllowList.parse(["10de:*"]))
    assert manager.acquire("nic-vm", [NIC], AllowList.parse(["8086:1533"]))


def test_a_failed_bind_gives_back_everything_the_vm_took(
    manager: DeviceManager, kernel: FakeKernel, db: Database
) -> None:
    (kernel.device_dir(GPU_AUDIO) / "driver_override").unlink()  # this write will fail
    with pytest.raises(Exception, match=r"cannot open .*0000:01:00\.1/driver_override"):
        manager.acquire("gpu-vm", [GPU, GPU_AUDIO])
    assert kernel.driver_of(GPU) == "nouveau" and kernel.override_of(GPU) is None
    assert kernel.driver_of(GPU_AUDIO) == "snd_hda_intel"
    assert db.device_claims.all() == []


def test_a_device_that_cannot_be_given_back_stays_claimed(
    manager: DeviceManager, kernel: FakeKernel, db: Database
) -> None:
    manager.acquire("nic-vm", [NIC])
    (kernel.driver_dir("vfio-pci") / "unbind").unlink()
    [problem] = manager.release("nic-vm")
    assert "vfio-pci/unbind" in problem
    assert db.device_claims.get(NIC).vm_name == "nic-vm"
    kernel.add_driver("vfio-pci")  # fixed: the next release gives it back
    assert manager.release("nic-vm") == []
    assert kernel.driver_of(NIC) == "igb"


def test_a_daemon_start_gives_back_what_stopped_vms_held(
    db: Database, kernel: FakeKernel, manager: DeviceManager
) -> None:
    manager.acquire("running-vm", [NIC])
    manager.acquire("stopped-vm", [GPU, GPU_AUDIO])
    manager.bind([LONELY])
    # the next volantd: a new manager on the same store and host
    restarted = DeviceManager(db, ReactingSysfs(kernel), manager.allowlist)
    assert restarted.reconcile({"running-vm"}) == 2
    assert drivers(kernel, NIC, GPU, GPU_AUDIO, LONELY) == [
        "vfio-pci", "nouveau", "snd_hda_intel", "vfio-pci",
    ]  # fmt: skip
    assert [(c.address, c.vm_name) for c in db.device_claims.all()] == [
        (NIC, "running-vm"),
        (LONELY, None),
    ]


# -- operators (the API) -------------------------------------------------------------------


def test_an_operator_binds_and_unbinds_with_the_same_rules(
    manager: DeviceManager, kernel: FakeKernel, db: Database
) -> None:
    [bound] = manager.bind([NIC])
    assert (bound.driver, bound.original_driver) == ("vfio-pci", "igb")
    assert db.device_claims.get(NIC).vm_name is None
    with pytest.raises(DeviceConflictError, match="shares IOMMU group 1"):
        manager.bind([GPU])
    with pytest.raises(DeviceNotAllowedError):
        manager.bind([NVME])
    [unbound] = manager.unbind([NIC])
    assert (unbound.driver, unbound.original_driver) == ("igb", "igb")
    assert db.device_claims.all() == []
    # a device nobody bound is left alone
    assert [b.driver for b in manager.unbind([NIC, LONELY])] == ["igb", None]


def test_a_vm_takes_over_what_an_operator_bound_and_gives_it_to_the_host(
    manager: DeviceManager, kernel: FakeKernel, db: Database
) -> None:
    manager.bind([NIC])
    manager.acquire("nic-vm", [NIC])
    assert db.device_claims.get(NIC).original_driver == "igb"
    manager.release("nic-vm")
    assert kernel.driver_of(NIC) == "igb"


def test_an_operator_cannot_unbind_what_a_vm_holds_or_what_volantd_did_not_bind(
    manager: DeviceManager, kernel: FakeKernel, db: Database
) -> None:
    record_vm(db, "nic-vm")
    manager.acquire("nic-vm", [NIC])
    with pytest.raises(DeviceConflictError, match=r'held by vm "nic-vm"; stop or delete the VM'):
        manager.unbind([NIC])
    db.vms.delete("nic-vm")  # its release failed, say: the claim outlives the VM
    assert [b.driver for b in manager.unbind([NIC])] == ["igb"]
    kernel.add_device("0000:06:00.0", "10de", "1db6", driver="vfio-pci", iommu_group=6)
    with pytest.raises(DeviceConflictError, match=r"was bound outside volantd"):
        manager.unbind(["0000:06:00.0"])
    assert kernel.driver_of("0000:06:00.0") == "vfio-pci"


def test_info_groups_and_paths_describe_the_host(
    manager: DeviceManager, kernel: FakeKernel
) -> None:
    device, claim = manager.info("01:00.0")
    assert (device.pci_id, device.driver, device.iommu_group, claim) == (
        "10de:1db6", "nouveau", 1, None,
    )  # fmt: skip
    [group] = manager.groups([GPU, GPU_AUDIO])
    assert (group.id, group.requested) == (1, (GPU, GPU_AUDIO))
    assert [member.address for member in group.members] == [BRIDGE, GPU, GPU_AUDIO]
    with pytest.raises(DeviceConflictError, match="no IOMMU group"):
        manager.groups([NO_IOMMU])
    with pytest.raises(DeviceConflictError, match=r"is not bound to vfio-pci; bind it first"):
        manager.paths([NIC])
    manager.bind([NIC])
    assert manager.paths([NIC]) == [kernel.device_dir(NIC)]


def test_validation_lists_every_problem(manager: DeviceManager) -> None:
    assert manager.problems([NIC, LONELY]) == []
    problems = manager.problems(["nope", NVME, GPU, "0000:09:00.0"], AllowList.parse(["10de:*"]))
    assert len(problems) == 4
    assert "'nope' is not a PCI address" in problems[0]
    assert "not in volantd's VFIO allow-list" in problems[1]
    assert "no PCI device 0000:09:00.0" in problems[2]
    assert "shares IOMMU group 1 with 0000:01:00.1" in problems[3]


def test_a_host_without_the_tree_has_no_devices(db: Database, tmp_path: Path) -> None:
    manager = DeviceManager(db, Sysfs(tmp_path / "empty"), AllowList(("8086:*",)))
    with pytest.raises(DeviceNotFoundError):
        manager.info(NIC)
