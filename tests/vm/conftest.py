"""Fixtures for tests that boot real guests under QEMU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.plugins import REPO, build_plugin
from support.volantd import Volantd, running_volantd
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


@pytest.fixture(scope="session")
def example_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/busybox-httpd built once with the real fledge CLI: its manifest file."""
    plugin = build_plugin(
        REPO / "examples/busybox-httpd/fledge.toml", tmp_path_factory.mktemp("example")
    )
    return next(plugin.artifact.parent.glob("*.json"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The VOLANT_HOME of this module's volantd (a restarted daemon reuses it)."""
    return tmp_path_factory.mktemp("volantd") / "home"


@pytest.fixture(scope="module")
def daemon_env(reference_kernel) -> dict[str, str]:
    """volantd's environment: the session's reference kernel; VOLANT_ACCEL passed on."""
    env = {"VOLANT_KERNELS_DIR": str(reference_kernel.directory.parent)}
    if os.environ.get("VOLANT_ACCEL"):
        env["VOLANT_ACCEL"] = os.environ["VOLANT_ACCEL"]
    return env


@pytest.fixture(scope="module")
def volantd(home: Path, daemon_env: dict[str, str], example_manifest: Path) -> Iterator[Volantd]:
    """A real volantd of its own (per test module) with the example plugin installed."""
    with running_volantd(home, env=daemon_env) as daemon:
        with daemon.client() as client:
            installed = client.post("/api/v1/plugins", json={"source": str(example_manifest)})
            assert installed.status_code == 201, installed.text
        yield daemon
