"""Running kestrel as an ordinary process on the host, with a real workload behind it."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kestrel_harness import (
    GUEST_PYTHON,
    Kestrel,
    launcher_command,
    marked_processes,
    wait_until,
    write_vm_json,
)


@pytest.fixture(scope="session")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kestrel.pyz compiled by the Debian interpreter that stands in for the guest's."""
    if not shutil.which(GUEST_PYTHON):
        pytest.skip(f"{GUEST_PYTHON} is needed to run the zipapp as the guest does")
    from kestrel.zipapp import build_zipapp

    return build_zipapp(tmp_path_factory.mktemp("zipapp"), GUEST_PYTHON)


@pytest.fixture(params=["module", "zipapp"])
def launcher(request: pytest.FixtureRequest) -> list[str]:
    """How kestrel is started: ``python -m kestrel`` or ``python3 -s -S -B kestrel.pyz``."""
    pyz = request.getfixturevalue("zipapp") if request.param == "zipapp" else None
    return launcher_command(request.param, pyz)


StartKestrel = Callable[..., Kestrel]


@pytest.fixture
def start_kestrel(tmp_path: Path) -> Iterator[StartKestrel]:
    """Start kestrel on a vm.json; on teardown stop it and check no workload process leaked."""
    started: list[Kestrel] = []

    def start(
        workload: dict[str, Any] | None,
        *,
        command: list[str] | None = None,
        health_check: dict[str, Any] | None = None,
        args: list[str] | None = None,
    ) -> Kestrel:
        workdir = tmp_path / f"kestrel-{len(started)}"
        workdir.mkdir()
        config = write_vm_json(workdir / "vm.json", workload=workload, health_check=health_check)
        kestrel = Kestrel(command or [sys.executable, "-m", "kestrel"], config, workdir, args)
        started.append(kestrel)
        return kestrel.start()

    yield start
    for kestrel in started:
        kestrel.stop()
    wait_until(lambda: not marked_processes(tmp_path), "workload processes to end", 10)


@pytest.fixture
def mark(tmp_path: Path) -> Path:
    """The tag that :func:`marked_processes` looks for (the test's tmp_path)."""
    return tmp_path
