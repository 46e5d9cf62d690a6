"""A fake host (`support.sysfs.kvm_host`: a PCI sysfs tree with a fake kernel) and a store.

No real PCI device or IOMMU exists on the machines these tests run on: the tree stands in
for /sys of a KVM host with an IOMMU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.sysfs import HOST_ALLOWLIST, FakeKernel, ReactingSysfs, kvm_host
from volantd.devices import AllowList, DeviceManager
from volantd.store import Database, open_database


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return kvm_host(tmp_path / "sys")


@pytest.fixture
def sysfs(kernel: FakeKernel) -> ReactingSysfs:
    return ReactingSysfs(kernel)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "home" / "volant.db")
    yield database
    database.close()


@pytest.fixture
def manager(db: Database, sysfs: ReactingSysfs) -> DeviceManager:
    return DeviceManager(db, sysfs, AllowList(HOST_ALLOWLIST, deny_when_empty=True))
