"""Choosing KVM or TCG."""

import pytest

from volantd.errors import VolantError
from volantd.hypervisors.accel import choose_accel, requested_accel
from volantd.hypervisors.base import Accel


def test_volant_accel_forces_tcg_without_probing(tmp_path, monkeypatch):
    monkeypatch.setenv("VOLANT_ACCEL", "tcg")
    choice = choose_accel("/nonexistent/qemu", tmp_path / "k", tmp_path / "cache.json")
    assert choice.accel is Accel.TCG
    assert "VOLANT_ACCEL=tcg" in choice.reason
    assert not (tmp_path / "cache.json").exists()


def test_an_unknown_accel_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("VOLANT_ACCEL", "hvf")
    with pytest.raises(VolantError, match="VOLANT_ACCEL='hvf' is not valid: use auto, kvm or tcg"):
        requested_accel()


def test_default_is_auto(monkeypatch):
    monkeypatch.delenv("VOLANT_ACCEL", raising=False)
    assert requested_accel() == "auto"
