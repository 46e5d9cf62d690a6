"""`volar doctor`'s cloud-hypervisor row: optional, unless it is the host's default hypervisor."""

from __future__ import annotations

from pathlib import Path

from volar.host.checks import Status, check_cloud_hypervisor

REASON = "/dev/kvm opens; KVM booted the guest kernel under Cloud Hypervisor in 0.31 s (cached)"


def facts(path: str | None, available: bool, default: str = "qemu", reason: str = "") -> dict:
    ch = {"path": path, "available": available, "reason": reason}
    return {"hypervisor": default, "cloud_hypervisor": ch}


def test_not_installed_is_a_warning_with_how_to_install() -> None:
    check = check_cloud_hypervisor(facts(None, False))
    assert (check.status, check.required) == (Status.WARN, False)
    assert "not installed (optional" in check.detail and "CLOUDHYPERVISOR" in (check.fix or "")


def test_missing_while_it_is_the_default_hypervisor_makes_the_host_not_ready() -> None:
    check = check_cloud_hypervisor(facts(None, False, default="cloud-hypervisor"))
    assert (check.status, check.required) == (Status.MISSING, True)
    assert "the default hypervisor" in check.detail


def test_installed_but_without_kvm_says_why() -> None:
    why = "/dev/kvm does not exist (no KVM on this host): Cloud Hypervisor needs KVM"
    check = check_cloud_hypervisor(facts("/usr/bin/cloud-hypervisor", False, reason=why))
    assert check.status is Status.WARN and why in check.detail
    assert check.value == "/usr/bin/cloud-hypervisor"


def test_available_is_ok_with_the_verdict() -> None:
    check = check_cloud_hypervisor(facts("/usr/bin/cloud-hypervisor", True, reason=REASON))
    assert check.status is Status.OK and REASON in check.detail


def test_without_volantd_only_the_binary_is_looked_for(tmp_path: Path) -> None:
    binary = tmp_path / "cloud-hypervisor"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    found = check_cloud_hypervisor(None, path=str(tmp_path), env={})
    assert found.status is Status.WARN and str(binary) in found.detail
    missing = check_cloud_hypervisor(None, path=str(tmp_path / "empty"), env={})
    assert missing.detail == "not installed (optional)"
