"""kestrel.pyz: precompiled, bundles h11, reproducible, runs without site or sources."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import kestrel
from kestrel.zipapp import ZipappError, build_zipapp, main


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("pyz"))


def test_holds_bytecode_only_for_kestrel_and_h11(built: Path) -> None:
    assert built.name == "kestrel.pyz"
    with zipfile.ZipFile(built) as archive:
        names = archive.namelist()
        infos = archive.infolist()
        main_code = archive.read("__main__.pyc")
    assert names == sorted(names)
    assert not [n for n in names if n.endswith(".py")]
    assert "__main__.pyc" in names and "kestrel/main.pyc" in names and "h11/__init__.pyc" in names
    assert "h11/LICENSE.txt" in names
    assert {n.split("/")[0] for n in names} == {"__main__.pyc", "kestrel", "h11"}
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    assert main_code[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(main_code[4:8], "little") == 0b01  # hash-based, unchecked


def test_same_inputs_give_the_same_bytes(built: Path, tmp_path: Path) -> None:
    again = build_zipapp(tmp_path / "again.pyz")
    assert again == tmp_path / "again.pyz"
    assert again.read_bytes() == built.read_bytes()


def test_runs_isolated_from_site_and_sources(built: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", str(built), "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kestrel {kestrel.__version__}"


def test_command_line_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "kestrel.pyz")
    with pytest.raises(ZipappError, match="cannot run the guest interpreter"):
        build_zipapp(tmp_path, python=str(tmp_path / "no-python"))
