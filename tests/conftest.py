"""Fixtures shared by every tier of the test suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def reference_kernel():
    """The provisioned reference kernel (fetched on first use, as `volantd kernels fetch` does)."""
    from volantd.kernels import KernelNotFoundError, KernelStore

    store = KernelStore.from_environment()
    try:
        return store.get()
    except KernelNotFoundError:
        return store.fetch()
