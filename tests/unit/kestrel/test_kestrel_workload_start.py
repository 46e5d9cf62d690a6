"""Starting the workload: a missing working directory is created, as `docker run` does."""

from __future__ import annotations

import os
from pathlib import Path

from kestrel.config import RestartPolicy, Workload
from kestrel.console import Console
from kestrel.workload import start_workload


def test_a_missing_workdir_is_created_and_the_workload_runs_in_it(tmp_path: Path) -> None:
    workdir = tmp_path / "srv" / "app"
    log = tmp_path / "console.log"
    console = Console(os.open(log, os.O_WRONLY | os.O_CREAT, 0o644), owned=True)
    workload = Workload(
        "process", ("/bin/sh", "-c", "pwd"), (), {"PATH": "/usr/bin:/bin"}, str(workdir),
        None, RestartPolicy(), None, None,
    )  # fmt: skip
    started = start_workload(workload, console)
    assert started.error is None and started.process is not None
    output, _ = started.process.communicate(timeout=10)
    assert output.decode().strip() == str(workdir)
    assert workdir.is_dir() and (workdir.stat().st_mode & 0o777) == 0o755
    assert f"created the missing working directory {workdir}" in log.read_text()


def test_a_workdir_that_cannot_be_made_is_a_start_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    console = Console(os.open(tmp_path / "console.log", os.O_WRONLY | os.O_CREAT), owned=True)
    workload = Workload(
        "process", ("/bin/true",), (), {}, str(blocker / "below"), None, RestartPolicy(),
        None, None,
    )  # fmt: skip
    started = start_workload(workload, console)
    assert started.process is None
    assert started.error is not None and f"working directory {blocker}/below" in started.error
