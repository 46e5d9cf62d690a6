"""`volantd kernels import|list|default` against a temporary VOLANT_HOME."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from volantd.cli import app
from volantd.kernels.cli import human_size
from volantd.settings import Settings

MakeTree = Callable[..., Path]
MakeImage = Callable[..., Path]
RELEASE = "6.9.0-volant-test"


@pytest.fixture
def volant_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "volant-home"
    monkeypatch.setenv("VOLANT_HOME", str(home))
    monkeypatch.delenv("VOLANT_KERNELS_DIR", raising=False)
    return home


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["kernels", *args])
    return result.exit_code, result.stdout, result.stderr


def test_import_then_list_as_json(
    volant_home: Path, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    code, out, _ = run("import", str(make_bzimage()), "--modules", str(make_module_tree().parent))
    assert code == 0
    assert f"{RELEASE}: kernel {RELEASE} (bzImage" in out and "12 modules, default" in out
    code, out, _ = run("list", "--json")
    assert code == 0
    (kernel,) = json.loads(out)
    assert kernel["name"] == RELEASE
    assert kernel["format"] == "bzImage"
    assert kernel["default"] is True
    assert kernel["image"] == str(volant_home / "kernels" / RELEASE / "vmlinuz")
    assert len(kernel["modules"]) == 12
    assert kernel["source"]["kind"] == "import"


def test_kernels_dir_puts_the_store_where_volantd_serve_looks(
    volant_home: Path, tmp_path: Path, make_bzimage: MakeImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`VOLANT_KERNELS_DIR` is honoured by `volantd kernels` as by `volantd serve`."""
    elsewhere = tmp_path / "shared-kernels"
    monkeypatch.setenv("VOLANT_KERNELS_DIR", str(elsewhere))
    assert run("import", str(make_bzimage()))[0] == 0
    (kernel,) = json.loads(run("list", "--json")[1])
    assert kernel["image"] == str(elsewhere / RELEASE / "vmlinuz")
    assert not (volant_home / "kernels").exists()
    assert Settings.from_environment().kernels == elsewhere


def test_list_shows_a_table_with_size_module_count_and_default(
    volant_home: Path, make_bzimage: MakeImage, make_module_tree: MakeTree
) -> None:
    run("import", str(make_bzimage()), "--modules", str(make_module_tree()), "--name", "mine")
    run("import", str(make_bzimage()), "--name", "plain", "--default")
    code, out, _ = run("list")
    assert code == 0
    mine = next(line for line in out.splitlines() if "mine" in line)
    plain = next(line for line in out.splitlines() if "plain" in line)
    assert RELEASE in mine and "bzImage" in mine and " 12 " in mine and "*" not in mine
    assert "8.0 KiB" in plain and " 0 " in plain and "*" in plain


def test_default_shows_or_sets_the_default(volant_home: Path, make_bzimage: MakeImage) -> None:
    run("import", str(make_bzimage()), "--name", "a")
    run("import", str(make_bzimage()), "--name", "b")
    code, _, err = run("default")
    assert code == 1 and "none is marked" in err
    code, out, _ = run("default", "b")
    assert code == 0 and out.startswith("b: ") and "default" in out
    assert run("default")[1].startswith("b: ")


def test_errors_are_one_line_for_the_user_with_exit_status_1(
    volant_home: Path, tmp_path: Path
) -> None:
    code, out, err = run("import", str(tmp_path / "missing-bzImage"))
    assert code == 1
    assert out == ""
    assert f"error: kernel image {tmp_path / 'missing-bzImage'} does not exist" in " ".join(
        err.split()
    )


def test_list_without_kernels_says_how_to_get_one(volant_home: Path) -> None:
    code, out, err = run("list")
    assert code == 0 and out == ""
    assert "volantd kernels fetch" in err
    assert json.loads(run("list", "--json")[1]) == []


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (15_506_996, "14.8 MiB"),
        (3 << 30, "3.0 GiB"),
    ],
)
def test_human_sizes(size: int, text: str) -> None:
    assert human_size(size) == text
