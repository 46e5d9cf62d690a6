"""csrc/init.c: compiled static without warnings, cached, and its vm.json module scanner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fledge.elf import elf_interpreter
from fledge.errors import FledgeError
from fledge.initc import CFLAGS, build_init, find_csrc

HARNESS = Path(__file__).with_name("modlist_harness.c")


def test_init_compiles_static_and_stripped_without_warnings(tmp_path: Path) -> None:
    csrc = find_csrc()
    result = subprocess.run(
        ["gcc", *CFLAGS, "-I", str(csrc), "-o", str(tmp_path / "init"), str(csrc / "init.c")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # -Werror turns any warning into a failure anyway
    assert elf_interpreter(tmp_path / "init") is None
    symbols = subprocess.run(["nm", str(tmp_path / "init")], capture_output=True, text=True)
    assert "no symbols" in symbols.stderr


def test_build_init_is_cached_by_content(tmp_path: Path) -> None:
    first = build_init(tmp_path)
    assert first.parent.parent == tmp_path / "init" and first.name == "init"
    stamp = first.stat().st_mtime_ns
    assert build_init(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert elf_interpreter(first) is None
    changed = tmp_path / "csrc"
    shutil.copytree(find_csrc(), changed)
    with (changed / "init.c").open("a") as out:
        out.write("/* a change */\n")
    other = build_init(tmp_path, sources=changed)
    assert other != first and other.read_bytes() == first.read_bytes()  # comments only


def test_a_missing_compiler_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    with pytest.raises(FledgeError, match=r"install gcc \(apt-get install gcc libc6-dev\)"):
        build_init(tmp_path)
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no gcc
    with pytest.raises(FledgeError, match=r"no C compiler found .* install the gcc package"):
        build_init(tmp_path)


def test_a_missing_static_libc_names_libc6_dev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A compiler whose link step fails exactly as gcc does without libc.a.
    fake = tmp_path / "cc-without-libc"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1" = --version ] && { echo "cc (fake) 1.0"; exit 0; }\n'
        'echo "/usr/bin/ld: cannot find -lc: No such file or directory" >&2\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(FledgeError, match=r"static C library is missing; install libc6-dev"):
        build_init(tmp_path)
    assert not list((tmp_path / "init").glob("*/init*"))


def test_a_missing_init_source_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fledge.initc

    monkeypatch.setenv("FLEDGE_CSRC_DIR", str(tmp_path / "empty"))
    assert find_csrc() == Path(fledge.initc.__file__).resolve().parents[4] / "csrc"
    installed = tmp_path / "venv" / "lib" / "site-packages" / "fledge" / "initc.py"
    monkeypatch.setattr(fledge.initc, "__file__", str(installed))
    with pytest.raises(FledgeError) as info:
        build_init(tmp_path)
    assert str(info.value).startswith(
        f"cannot find init.c (looked in {tmp_path / 'empty'}, {tmp_path / 'csrc'})"
    )
    assert "set FLEDGE_CSRC_DIR" in str(info.value)


@pytest.fixture(scope="module")
def scanner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("modlist") / "modlist"
    subprocess.run(
        [
            *("gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined"),
            *("-I", str(find_csrc()), "-o", str(binary), str(HARNESS)),
        ],
        check=True,
    )
    return binary


def scan(scanner: Path, text: str | bytes) -> tuple[int, list[str]]:
    data = text.encode() if isinstance(text, str) else text
    result = subprocess.run(
        [str(scanner)],
        input=data,
        capture_output=True,
        check=False,
        env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1"},
    )
    assert result.stderr == b"", result.stderr.decode()
    return result.returncode, result.stdout.decode().splitlines()


def test_the_scanner_reads_a_real_vm_json(scanner: Path) -> None:
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec" / "vm" / "vm.json"
    document = json.loads(fixture.read_text())
    assert scan(scanner, fixture.read_bytes()) == (
        0,
        [f"{len(document['modules'])} modules", *document["modules"]],
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"modules": ["/a.ko", "/b.ko"]}', ["2 modules", "/a.ko", "/b.ko"]),
        ('\n\t{ "modules" :\r\n[ "/a.ko" ,"/b.ko" ] }\n', ["2 modules", "/a.ko", "/b.ko"]),
        ('{"contract": 1}', ["0 modules"]),
        ('{"modules": []}', ["0 modules"]),
        ('{"modules": null}', ["0 modules"]),
        (r'{"modules": ["\/lib\/modules\/x.ko"]}', ["1 modules", "/lib/modules/x.ko"]),
        (r'{"modules": ["/a \"b\" \\c.ko"]}', ["1 modules", '/a "b" \\c.ko']),
        (
            r'{"modules": ["/caf\u00e9.ko", "/\ud83d\ude00.ko"]}',
            ["2 modules", "/café.ko", "/😀.ko"],
        ),
        (
            # "modules" nested elsewhere (the manifest, labels, strings) is not the list
            '{"manifest": {"modules": ["/wrong.ko"], "labels": {"x": "\\"modules\\": [1]"}},'
            ' "n": -1.5e+3, "t": true, "f": false, "z": null, "l": [[{}], []],'
            ' "modules": ["/right.ko"]}',
            ["1 modules", "/right.ko"],
        ),
        ('{"modules": ["/first.ko"], "modules": ["/last.ko"]}', ["1 modules", "/last.ko"]),
    ],
)
def test_the_scanner_parses(scanner: Path, text: str, expected: list[str]) -> None:
    assert scan(scanner, text) == (0, expected)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "error at 0: the document must be a JSON object"),
        ('["modules"]', "error at 0: the document must be a JSON object"),
        ('{"modules": "/a.ko"}', 'error at 12: "modules" must be an array of strings'),
        ('{"modules": ["/a.ko", 3]}', 'error at 22: "modules" must be an array of strings'),
        ('{"modules": ["/a.ko"', "error at 20: expected ',' or ']' in \"modules\""),
        ('{"modules": ["/a.ko', "error at 19: unterminated string"),
        ('{"modules": ["/a\\x.ko"]}', "error at 18: invalid escape in string"),
        ('{"modules": ["/a\\u00"]}', "error at 21: bad hex digit in \\u escape"),
        ('{"modules": ["\\ud800.ko"]}', "error at 20: unpaired surrogate in \\u escape"),
        ('{"modules": ["/a\\u0000.ko"]}', "error at 22: NUL character in a module path"),
        ('{"modules": ["/a\n.ko"]}', "error at 17: control character in string"),
        ('{"a": tru, "modules": []}', "error at 6: expected a value"),
        ('{"a": 1 "modules": []}', "error at 8: expected ',' or '}'"),
        ('{"modules": ["/a.ko"]} trailing', "error at 23: unexpected text after the JSON object"),
        ('{"a": ' + "[" * 100 + "]" * 100 + "}", "error at 69: nested too deeply"),
    ],
)
def test_malformed_documents_are_reported_and_load_nothing(
    scanner: Path, text: str, error: str
) -> None:
    assert scan(scanner, text) == (1, [error])
