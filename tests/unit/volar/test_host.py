"""volar.host: the checks against real (temporary) PATH folders, and the setup planner."""

from __future__ import annotations

import os
import shlex
import struct
from pathlib import Path

import pytest

from volar.host.checks import (
    SETUP_PACKAGES,
    Check,
    HostReport,
    Status,
    check_busybox,
    check_compiler,
    check_kernel,
    check_kvm_and_accel,
    check_qemu,
    check_volantd,
    elf_interpreter,
    ready,
)
from volar.host.setup import SetupFacts, StepKind, plan_setup, render_unit, root_steps, setup_facts


def executable(folder: Path, name: str, script: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def elf64(interpreter: str | None) -> bytes:
    """A minimal little-endian ELF64 executable header, with a PT_INTERP when asked."""
    phoff, phentsize = 64, 56
    phnum = 1 if interpreter else 0
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, 0, 0, 64, phentsize, phnum, 0, 0, 0)
    if not interpreter:
        return header
    data = interpreter.encode() + b"\0"
    offset = phoff + phentsize
    program = struct.pack("<IIQQQQQQ", 3, 4, offset, 0, 0, len(data), len(data), 1)
    return header + program + data


# The checks


def test_qemu_missing_names_the_package(tmp_path: Path) -> None:
    check = check_qemu(str(tmp_path))
    assert check.status is Status.MISSING and check.required
    assert check.packages == ("qemu-system-x86",)
    assert check.fix == "apt-get install qemu-system-x86"


def test_qemu_present_reports_its_version(tmp_path: Path) -> None:
    executable(tmp_path, "qemu-system-x86_64", 'echo "QEMU emulator version 9.1.0 (Debian 1:9.1)"')
    check = check_qemu(str(tmp_path))
    assert check.status is Status.OK and check.value == "9.1.0"
    assert str(tmp_path / "qemu-system-x86_64") in check.detail


def test_qemu_that_does_not_run_is_a_warning(tmp_path: Path) -> None:
    executable(tmp_path, "qemu-system-x86_64", "exit 3")
    check = check_qemu(str(tmp_path))
    assert check.status is Status.WARN and "--version failed" in check.detail


def test_elf_interpreter_tells_static_from_dynamic(tmp_path: Path) -> None:
    (tmp_path / "static").write_bytes(elf64(None))
    (tmp_path / "dynamic").write_bytes(elf64("/lib64/ld-linux-x86-64.so.2"))
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert elf_interpreter(tmp_path / "static") is None
    assert elf_interpreter(tmp_path / "dynamic") == "/lib64/ld-linux-x86-64.so.2"
    with pytest.raises(ValueError):
        elf_interpreter(tmp_path / "script")


def test_busybox_must_be_static(tmp_path: Path) -> None:
    missing = check_busybox(str(tmp_path))
    assert missing.status is Status.WARN and not missing.required
    assert missing.packages == ("busybox-static",)
    busybox = tmp_path / "busybox"
    busybox.write_bytes(elf64("/lib64/ld-linux-x86-64.so.2"))
    busybox.chmod(0o755)
    dynamic = check_busybox(str(tmp_path))
    assert dynamic.status is Status.WARN and "dynamically linked" in dynamic.detail
    busybox.write_bytes(elf64(None))
    assert check_busybox(str(tmp_path)).status is Status.OK


def test_compiler_and_static_libc(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path)}
    none = check_compiler(str(tmp_path), env)
    assert [(c.name, c.status) for c in none] == [
        ("c-compiler", Status.WARN),
        ("static-libc", Status.WARN),
    ]
    assert none[0].packages == ("gcc", "libc6-dev")
    # a compiler without libc.a answers -print-file-name with the bare name
    executable(tmp_path, "cc", 'echo "libc.a"')
    compiler, libc = check_compiler(str(tmp_path), env)
    assert compiler.status is Status.OK and libc.status is Status.WARN
    assert libc.packages == ("libc6-dev",)
    archive = tmp_path / "libc.a"
    archive.write_bytes(b"!<arch>\n")
    executable(tmp_path, "cc", f"echo {shlex.quote(str(archive))}")
    assert check_compiler(str(tmp_path), env)[1].status is Status.OK


def test_cc_environment_variable_wins(tmp_path: Path) -> None:
    executable(tmp_path, "cc", 'echo "libc.a"')
    archive = tmp_path / "libc.a"
    archive.write_bytes(b"!<arch>\n")
    executable(tmp_path, "mycc", f"echo {shlex.quote(str(archive))}")
    compiler, libc = check_compiler(str(tmp_path), {"PATH": str(tmp_path), "CC": "mycc -m64"})
    assert compiler.value == str(tmp_path / "mycc") and libc.status is Status.OK


def test_kernel_without_volantd_looks_at_the_store(tmp_path: Path) -> None:
    env = {"VOLANT_HOME": str(tmp_path)}
    assert check_kernel(None, env).status is Status.MISSING
    (tmp_path / "kernels" / "debian-6.1").mkdir(parents=True)
    (tmp_path / "kernels" / "debian-6.1" / "kernel.json").write_text("{}")
    found = check_kernel(None, env)
    assert found.status is Status.OK and found.value == "debian-6.1"
    assert "not verified" in found.detail


def test_kernel_from_volantd_facts() -> None:
    ok = check_kernel({"kernel": {"ok": True, "name": "debian-x"}})
    assert ok.status is Status.OK and ok.value == "debian-x"
    damaged = {"ok": False, "error": "vmlinuz changed", "fix": "volantd kernels fetch --force"}
    bad = check_kernel({"kernel": damaged})
    assert bad.status is Status.MISSING and bad.fix == "volantd kernels fetch --force"


def _facts(exists: bool, usable: bool, accel: str | None, reason: str) -> dict[str, object]:
    return {
        "kvm": {"exists": exists, "usable": usable, "reason": "/dev/kvm says so"},
        "accel": {"accel": accel, "reason": reason, "requested": "auto"},
    }


def test_kvm_and_accel_rows() -> None:
    kvm, accel = check_kvm_and_accel(_facts(True, True, "kvm", "KVM booted the guest kernel"))
    assert kvm.status is Status.OK and accel.status is Status.OK and accel.value == "kvm"
    kvm, accel = check_kvm_and_accel(_facts(True, True, "tcg", "KVM probe: guest printed nothing"))
    assert kvm.status is Status.WARN and kvm.value == "unusable"
    assert accel.value == "tcg" and "printed nothing" in accel.detail
    kvm, accel = check_kvm_and_accel(_facts(False, False, "tcg", "/dev/kvm does not exist"))
    assert kvm.status is Status.WARN and "modprobe" in (kvm.fix or "")
    _, undecided = check_kvm_and_accel(_facts(True, True, None, "needs qemu"))
    assert undecided.status is Status.WARN and undecided.value is None
    assert not any(check.required for check in check_kvm_and_accel(None))


def test_volantd_row() -> None:
    missing = check_volantd(None, None, None)
    assert (
        missing.status is Status.MISSING and missing.required and "install" in (missing.fix or "")
    )
    broken = check_volantd("/usr/bin/volantd", None, "`volantd host check --json` failed: boom")
    assert broken.status is Status.WARN and "boom" in broken.detail
    ok = check_volantd("/usr/bin/volantd", {"volantd": {"version": "1.2.3"}}, None)
    assert ok.status is Status.OK and ok.value == "1.2.3"


def test_only_required_checks_decide_readiness() -> None:
    ok = Check("qemu", Status.OK, True, "")
    assert ready([ok, Check("api", Status.WARN, False, "")])
    assert not ready([ok, Check("kernel", Status.MISSING, True, "")])


# The planner

ALL_OK = [
    Check("volantd", Status.OK, True, "volantd 0.1.0"),
    Check("qemu", Status.OK, True, "QEMU 7.2"),
    Check("kernel", Status.OK, True, "debian-6.1.0 (default kernel)"),
    Check("busybox", Status.OK, False, "static"),
]


def facts(**changes: object) -> SetupFacts:
    base = SetupFacts(volantd="/opt/volant/bin/volantd", home="/var/lib/volant",
                      kernel_fix=None, apt_lists_ready=True)  # fmt: skip
    return SetupFacts(**{**base.__dict__, **changes})


def test_nothing_to_do_when_everything_is_present() -> None:
    steps = plan_setup(ALL_OK, facts())
    assert [step.kind for step in steps] == [StepKind.DONE, StepKind.DONE, StepKind.DONE]
    assert not any(step.pending for step in steps)
    assert all(package in steps[0].note for package in SETUP_PACKAGES)


def test_missing_tools_become_one_apt_get_install(tmp_path: Path) -> None:
    checks = [
        check_qemu(str(tmp_path)),
        check_busybox(str(tmp_path)),
        *check_compiler(str(tmp_path), {"PATH": str(tmp_path)}),
        Check("kernel", Status.OK, True, "debian"),
    ]
    steps = plan_setup(checks, facts())
    update, install, kernel, boot_image = steps
    assert update.command == ("apt-get", "update", "-q") and update.needs_root
    assert install.shell() == (
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "qemu-system-x86 busybox-static gcc libc6-dev"
    )
    assert kernel.kind is StepKind.DONE and boot_image.kind is StepKind.DONE
    assert root_steps(steps) == [update, install]


def test_missing_kernel_is_fetched_with_volantd() -> None:
    checks = [*ALL_OK[:2], Check("kernel", Status.MISSING, True, "none", "volantd kernels fetch")]
    steps = plan_setup(checks, facts(kernel_fix="volantd kernels fetch"))
    assert steps[-2].command == ("/opt/volant/bin/volantd", "kernels", "fetch")
    assert not steps[-2].needs_root  # volantd's store works unprivileged
    damaged = plan_setup(checks, facts(kernel_fix="volantd kernels fetch --force"))
    assert damaged[-2].command[-1] == "--force"
    # without apt's package lists the kernel cannot be found: refresh them first, once
    no_lists = plan_setup(checks, facts(kernel_fix="volantd kernels fetch", apt_lists_ready=False))
    assert [s.command[:2] for s in no_lists if s.pending] == [
        ("apt-get", "update"),
        ("/opt/volant/bin/volantd", "kernels"),
    ]


def test_without_volantd_the_kernel_step_is_blocked() -> None:
    checks = [Check("kernel", Status.MISSING, True, "none")]
    steps = plan_setup(checks, facts(volantd=None, home=None, kernel_fix="volantd kernels fetch",
                                     boot_image_ready=False))  # fmt: skip
    assert steps[-2].kind is StepKind.BLOCKED and "install it" in steps[-2].note
    assert steps[-1].kind is StepKind.SKIP


def test_a_missing_boot_initramfs_is_built_with_volantd() -> None:
    steps = plan_setup(ALL_OK, facts(boot_image_ready=False))
    assert [step.command for step in steps if step.pending] == [
        ("/opt/volant/bin/volantd", "boot-image", "build")
    ]
    assert not steps[-1].needs_root


def test_systemd_unit_is_written_and_enabled(tmp_path: Path) -> None:
    unit = tmp_path / "volantd.service"
    steps = plan_setup(ALL_OK, facts(systemd=True, unit_path=unit, systemd_running=True,
                                     unit_writable=True))  # fmt: skip
    pending = [step for step in steps if step.pending]
    assert [step.kind for step in pending] == [StepKind.WRITE, StepKind.RUN, StepKind.RUN]
    write, reload, enable = pending
    assert write.path == unit and not write.needs_root
    assert "ExecStart=/opt/volant/bin/volantd serve" in write.content
    assert "Environment=VOLANT_HOME=/var/lib/volant" in write.content
    assert write.shell().startswith(f"cat > {unit} <<'EOF'\n") and write.shell().endswith("EOF")
    assert reload.command == ("systemctl", "daemon-reload")
    assert enable.command == ("systemctl", "enable", "--now", "volantd.service")


def test_systemd_steps_are_idempotent(tmp_path: Path) -> None:
    unit = tmp_path / "volantd.service"
    content = render_unit("/opt/volant/bin/volantd", "/var/lib/volant", {})
    same = facts(systemd=True, unit_path=unit, unit_current=content, systemd_running=True,
                 service_enabled=True, service_active=True)  # fmt: skip
    assert not any(step.pending for step in plan_setup(ALL_OK, same))
    # unit up to date but the service stopped: start it, no reload
    stopped = plan_setup(ALL_OK, facts(**{**same.__dict__, "service_active": False}))
    assert [s.command for s in stopped if s.pending] == [
        ("systemctl", "enable", "--now", "volantd.service")
    ]
    # a changed unit of a running service: reload, enable, restart
    changed = plan_setup(ALL_OK, facts(**{**same.__dict__, "unit_current": "old"}))
    assert [s.command[1] for s in changed if s.kind is StepKind.RUN] == [
        "daemon-reload",
        "enable",
        "restart",
    ]


def test_without_systemd_the_unit_is_written_but_not_enabled(tmp_path: Path) -> None:
    steps = plan_setup(ALL_OK, facts(systemd=True, unit_path=tmp_path / "v.service",
                                     systemd_running=False, pid1="tini"))  # fmt: skip
    kinds = [step.kind for step in steps[-2:]]
    assert kinds == [StepKind.WRITE, StepKind.SKIP]
    assert "PID 1 is tini" in steps[-1].note and "volantd serve" in steps[-1].note
    assert not any(step.command[:1] == ("systemctl",) for step in steps)
    assert steps[-2].needs_root  # not writable in these facts


def test_unit_passes_settings_but_never_the_api_key() -> None:
    unit = render_unit("/usr/local/bin/volantd", "/srv/volant home", {"VOLANT_ACCEL": "tcg"})
    assert "Environment='VOLANT_HOME=/srv/volant home'" in unit
    assert "Environment=VOLANT_ACCEL=tcg" in unit
    assert "KillMode=process" in unit and "EnvironmentFile=-/etc/default/volantd" in unit
    assert "API_KEY=" not in unit


def test_setup_facts_filter_the_environment(tmp_path: Path) -> None:

    report = HostReport(ALL_OK, "/opt/volantd", {"home": "/var/lib/volant"})
    env = {"PATH": str(tmp_path), "VOLANT_API_KEY": "secret", "VOLANT_API_LISTEN": "127.0.0.1:9"}
    unit = tmp_path / "units" / "volantd.service"
    gathered = setup_facts(report, systemd=True, unit_path=unit, path=str(tmp_path), env=env)
    assert gathered.env == {"VOLANT_API_LISTEN": "127.0.0.1:9"}
    assert gathered.unit_current is None and not gathered.unit_writable  # no such folder
    assert gathered.kernel_fix is None and gathered.apt_lists_ready
    assert gathered.home == "/var/lib/volant" and gathered.volantd == "/opt/volantd"
    assert os.listdir(tmp_path) == []  # gathering changes nothing
