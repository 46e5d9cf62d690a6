"""Fixtures for tests that boot real guests under QEMU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from volantd.hypervisors import QemuDriver

pytestmark = pytest.mark.vm


@pytest.fixture(scope="session")
def qemu_driver(tmp_path_factory: pytest.TempPathFactory) -> QemuDriver:
    """The real QEMU driver; the KVM probe runs at most once per session."""
    return QemuDriver(
        accel=os.environ.get("VOLANT_ACCEL"), cache_dir=tmp_path_factory.mktemp("cache")
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "vm"
    path.mkdir()
    return path
