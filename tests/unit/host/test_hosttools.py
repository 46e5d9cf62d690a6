"""Missing host programs are reported with the package that provides them."""

import pytest

from volantd.errors import MissingHostToolError
from volantd.hosttools import require_tool


def test_a_present_tool_resolves_to_its_path():
    assert require_tool("sh", "run shell scripts").endswith("/sh")


def test_a_missing_tool_names_the_debian_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingHostToolError) as caught:
        require_tool("qemu-system-x86_64", "run microVMs with the qemu driver")
    assert str(caught.value) == (
        "qemu-system-x86_64 is required to run microVMs with the qemu driver but was not found "
        "on PATH; install it with: apt-get install qemu-system-x86"
    )
