"""Real inputs for fledge tests: project folders with a fledge.toml, a shared build cache."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from fledge.initramfs import InitramfsBuilder, load_config
from fledge.tree import ImageTree

MakeProject = Callable[..., Path]
Assemble = Callable[[Path], ImageTree]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fledge cache for the session (the compiled init is reused across tests)."""
    return tmp_path_factory.mktemp("fledge-cache")


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """Write ``fledge.toml`` and ``files`` (path → text/bytes, or (content, mode)) into a fresh
    project folder; returns the config path."""

    def make(
        config: str,
        files: Mapping[str, str | bytes | tuple[str | bytes, int]] | None = None,
        *,
        folder: str = "project",
    ) -> Path:
        root = tmp_path / folder
        root.mkdir(parents=True, exist_ok=True)
        for name, spec in (files or {}).items():
            content, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
            os.chmod(path, mode)
        (root / "fledge.toml").write_text(config)
        return root / "fledge.toml"

    return make


@pytest.fixture
def assemble(cache_dir: Path) -> Assemble:
    """The image a config describes, assembled in memory, not written."""

    def run(config_path: Path) -> ImageTree:
        config = load_config(config_path)
        return InitramfsBuilder(config, config_path.parent, cache_dir=cache_dir).assemble()

    return run
