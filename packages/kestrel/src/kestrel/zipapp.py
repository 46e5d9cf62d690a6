"""Building ``kestrel.pyz``: the agent and h11 as precompiled bytecode in one reproducible zip.

The bytecode is compiled by the interpreter the guest will run (``python``; it must be the
same minor version), in a subprocess with ``-E -s -S``, as unchecked-hash ``.pyc`` files in
the legacy location (``module.pyc`` next to where ``module.py`` was), which zipimport loads
without any source. The archive holds no ``.py`` file at all, not even ``__main__``:
``python kestrel.pyz`` runs ``__main__.pyc``. Entries are sorted, stored uncompressed (no
zlib needed at start-up) and carry fixed timestamps, so the same inputs give the same bytes.

Usage: ``python -m kestrel.zipapp OUT [--python GUEST_PYTHON]`` (OUT: a file or a directory).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import KestrelError

ZIPAPP_NAME = "kestrel.pyz"
BUNDLED_DISTRIBUTIONS = ("h11",)
"""Pure-Python wheels bundled next to the kestrel package."""
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAIN = "from kestrel.main import run\n\nrun()\n"
_COMPILE = """
import compileall, py_compile, sys
ok = compileall.compile_dir(
    sys.argv[1], ddir=sys.argv[2], quiet=1, legacy=True, workers=1,
    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
)
sys.exit(0 if ok else 1)
"""


class ZipappError(KestrelError):
    """The zipapp could not be built (missing package, compile failure)."""


def build_zipapp(destination: Path, python: str | None = None) -> Path:
    """Write ``kestrel.pyz`` to ``destination`` (a file, or a directory to put it in).

    ``python`` is the guest interpreter used to compile the bytecode (default: this one).
    Returns the path written. The file is replaced atomically.
    """
    destination = Path(destination)
    target = destination / ZIPAPP_NAME if destination.is_dir() else destination
    interpreter = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="kestrel-zipapp-") as scratch:
        stage = Path(scratch) / "stage"
        _copy_tree(Path(__file__).resolve().parent, stage / "kestrel")
        extras: dict[str, bytes] = {}
        for name in BUNDLED_DISTRIBUTIONS:
            extras.update(_stage_distribution(name, stage))
        (stage / "__main__.py").write_text(_MAIN)
        _compile(interpreter, stage)
        entries = {
            path.relative_to(stage).as_posix(): path.read_bytes()
            for path in stage.rglob("*.pyc")
            if "__pycache__" not in path.parts
        }
        entries.update(extras)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            _write_zip(temporary, entries)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
    return target


def _copy_tree(source: Path, stage: Path) -> None:
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        destination = stage / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)


def _stage_distribution(name: str, stage: Path) -> dict[str, bytes]:
    """Copy the sources of installed distribution ``name``; its licence files as extras."""
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ZipappError(f"{name} is not installed; kestrel bundles it into the zipapp") from None
    extras: dict[str, bytes] = {}
    for file in distribution.files or []:
        parts = file.parts
        located = Path(str(distribution.locate_file(file)))
        if parts[0] == name and file.suffix == ".py":
            destination = stage.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(located, destination)
        elif parts[0].endswith(".dist-info") and "LICENSE" in file.name.upper():
            extras[f"{name}/{file.name}"] = located.read_bytes()
    if not (stage / name / "__init__.py").is_file():
        raise ZipappError(f"{name} is installed without its sources; cannot bundle it")
    return extras


def _compile(python: str, stage: Path) -> None:
    command = [python, "-E", "-s", "-S", "-c", _COMPILE, str(stage), ZIPAPP_NAME]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ZipappError(f"cannot run the guest interpreter {python}: {error}") from None
    if result.returncode != 0:
        raise ZipappError(
            f"compiling kestrel with {python} failed:\n{result.stdout}{result.stderr}".rstrip()
        )


def _write_zip(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.create_system = 3  # unix, whatever machine builds it
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, entries[name])


def main(argv: list[str] | None = None) -> int:
    """``python -m kestrel.zipapp OUT [--python GUEST_PYTHON]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kestrel.zipapp", description=__doc__)
    parser.add_argument("destination", type=Path, help="the .pyz file, or a directory for it")
    parser.add_argument("--python", help="guest interpreter that compiles (default: this one)")
    args = parser.parse_args(argv)
    try:
        written = build_zipapp(args.destination, args.python)
    except KestrelError as error:
        print(f"kestrel.zipapp: {error}", file=sys.stderr)
        return 1
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
