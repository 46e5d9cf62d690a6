"""`python -m pluginspec validate` and the validate_file API it is built on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pluginspec import DocumentKind, FledgeConfig, PluginManifest, validate_file

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec"
SEED = FIXTURES / "manifests" / "seed-initramfs-myapp.json"


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pluginspec", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def test_valid_files_of_every_kind() -> None:
    files = [
        SEED,
        FIXTURES / "manifests" / "webserver-manifest.toml",
        FIXTURES / "fledge" / "mode2-custom-init.toml",
        FIXTURES / "vm" / "caddy-vm-config.json",
        FIXTURES / "vm" / "vm.json",
    ]
    result = run("validate", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{files[0]}: ok (plugin-manifest)",
        f"{files[1]}: ok (manifest-toml)",
        f"{files[2]}: ok (fledge-config)",
        f"{files[3]}: ok (vm-config)",
        f"{files[4]}: ok (vm-contract)",
    ]


def test_invalid_file_lists_every_error_and_exits_1() -> None:
    bad = FIXTURES / "invalid" / "manifest-many-errors.json"
    result = run("validate", SEED, bad)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{SEED}: ok (plugin-manifest)"
    assert lines[1] == f"{bad}: invalid (plugin-manifest): 13 errors"
    assert "  resources.cpu_cores: must be >= 1 (got 0)" in lines
    assert "  resource: unknown key 'resource' (did you mean 'resources'?)" in lines
    assert len(lines) == 2 + 13


def test_unreadable_and_malformed_files_are_named_with_line_and_column(tmp_path: Path) -> None:
    broken_json = tmp_path / "broken.json"
    broken_json.write_text('{\n  "name": "x",\n  "version": \n}\n')
    broken_toml = tmp_path / "fledge.toml"
    broken_toml.write_text('version = "1"\nstrategy = \n')
    binary = tmp_path / "blob.json"
    binary.write_bytes(b"\xff\x00\x01")
    missing = tmp_path / "missing.json"
    result = run("validate", broken_json, broken_toml, binary, missing, tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert (
        f"{broken_json}: invalid: 1 error\n  invalid JSON at line 4, column 1: Expecting value"
        in out
    )
    assert f"{broken_toml}: invalid (fledge-config): 1 error\n  invalid TOML: " in out
    assert "(at line 2, column 12)" in out
    assert f"{binary}: invalid: 1 error\n  not UTF-8 text (invalid byte 0xff at offset 0)" in out
    assert f"{missing}: invalid: 1 error\n  cannot read file: No such file or directory" in out
    assert f"{tmp_path}: invalid: 1 error\n  is a directory, not a file" in out


def test_kind_is_detected_from_name_and_content(tmp_path: Path) -> None:
    named = tmp_path / "fledge.toml"
    named.write_text('version = "1"\n')
    by_content = tmp_path / "build.toml"
    by_content.write_text('version = "1"\nstrategy = "initramfs"\n')
    unknown = tmp_path / "other.json"
    unknown.write_text('{"hello": 1}\n')
    array = tmp_path / "list.json"
    array.write_text("[1, 2]\n")
    assert validate_file(named).kind is DocumentKind.FLEDGE_CONFIG
    assert [str(i) for i in validate_file(named).issues] == ["strategy: is required"]
    report = validate_file(by_content)
    assert report.ok and report.kind is DocumentKind.FLEDGE_CONFIG
    assert isinstance(report.document, FledgeConfig)
    assert validate_file(unknown).issues[0].message.startswith("cannot tell what kind")
    assert not validate_file(array).ok


def test_kind_can_be_forced(tmp_path: Path) -> None:
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps({"resources": {"cpu_cores": 4}, "network": {"mode": "dhcp"}}))
    assert run("validate", "--kind", "vm-config-patch", patch).stdout == (
        f"{patch}: ok (vm-config-patch)\n"
    )
    template = tmp_path / "template.json"
    template.write_text('name = "a"\nversion = "1"\n')
    result = run("validate", "--kind", "manifest-toml", template)
    assert result.returncode == 0 and "ok (manifest-toml)" in result.stdout


def test_paths_in_a_document_need_not_exist(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps({"name": "a", "version": "1", "rootfs": {"url": "build/not-yet-built.img"}})
    )
    report = validate_file(manifest)
    assert report.ok and isinstance(report.document, PluginManifest)


@pytest.mark.parametrize(
    "args",
    [(), ("validate",), ("validate", "--kind", "nonsense", "x.json"), ("frobnicate",)],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert result.stdout == ""
