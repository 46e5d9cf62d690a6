"""The default-mode PID 1: ``csrc/init.c`` compiled static with the host C compiler.

The sources live in the repository's ``csrc/`` folder (the one copy, shared with tests);
fledge finds it next to its own package in a checkout or editable install, or where
``$FLEDGE_CSRC_DIR`` points. The result is cached under ``<cache>/init/<key>/init``, where the
key hashes the sources, the compiler's identity and the flags, so a changed compiler or source
gives a fresh build and an unchanged one costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from .elf import elf_interpreter
from .errors import FledgeError

CFLAGS: tuple[str, ...] = (
    "-std=c99",
    "-D_GNU_SOURCE",
    "-static",
    "-Os",
    "-s",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--build-id=none",
)
"""Flags for init.c: static, small, stripped, warnings are errors, no build-id (reproducible)."""


def find_csrc() -> Path:
    """The folder holding ``init.c``: ``$FLEDGE_CSRC_DIR``, else the repository's ``csrc/``."""
    explicit = os.environ.get("FLEDGE_CSRC_DIR")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(Path(__file__).resolve().parents[4] / "csrc")
    for folder in candidates:
        if (folder / "init.c").is_file():
            return folder
    where = ", ".join(str(c) for c in candidates)
    raise FledgeError(
        f"cannot find init.c (looked in {where}): fledge compiles the guest init from the "
        "Volant repository's csrc/ folder; run fledge from a checkout (uv run fledge) or set "
        "FLEDGE_CSRC_DIR to that folder"
    )


def find_compiler() -> list[str]:
    """The C compiler command: ``$CC`` (may carry arguments), else ``cc``, else ``gcc``."""
    explicit = os.environ.get("CC")
    if explicit and shlex.split(explicit):
        command = shlex.split(explicit)
        if shutil.which(command[0]) is None:
            raise FledgeError(
                f"the C compiler named by $CC ({explicit}) is not installed: install gcc "
                "(apt-get install gcc libc6-dev) or point CC at a compiler"
            )
        return command
    for name in ("cc", "gcc"):
        found = shutil.which(name)
        if found:
            return [found]
    raise FledgeError(
        "no C compiler found (looked for $CC, cc and gcc): the default init mode compiles "
        "csrc/init.c; install the gcc package (apt-get install gcc libc6-dev)"
    )


def _compiler_identity(compiler: list[str]) -> bytes:
    try:
        result = subprocess.run(
            [*compiler, "--version"], capture_output=True, check=False, timeout=60
        )
    except OSError as exc:
        raise FledgeError(f"cannot run the C compiler {compiler[0]}: {exc.strerror}") from None
    return result.stdout + result.stderr


def _cache_key(sources: Path, compiler: list[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(sources.iterdir()):
        if path.suffix in (".c", ".h") and path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(b"\0".join(arg.encode() for arg in compiler) + b"\0")
    digest.update(_compiler_identity(compiler) + b"\0")
    digest.update(" ".join(CFLAGS).encode())
    return digest.hexdigest()


def _explain_failure(compiler: list[str], output: str) -> FledgeError:
    if "cannot find -lc" in output or "cannot find -lgcc_eh" in output:
        return FledgeError(
            "linking the guest init statically failed: the static C library is missing; "
            "install libc6-dev (apt-get install libc6-dev)\n" + output.strip()
        )
    if ".h: No such file or directory" in output:
        return FledgeError(
            "compiling the guest init failed: the C library headers are missing; install "
            "libc6-dev (apt-get install libc6-dev)\n" + output.strip()
        )
    return FledgeError(f"compiling csrc/init.c with {compiler[0]} failed:\n{output.strip()}")


def build_init(cache_dir: Path, *, sources: Path | None = None) -> Path:
    """The static ``init`` executable for the default init mode (compiled once per key)."""
    folder = sources or find_csrc()
    compiler = find_compiler()
    key = _cache_key(folder, compiler)
    target = cache_dir / "init" / key / "init"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"init.partial-{os.getpid()}")
    command = [*compiler, *CFLAGS, "-I", str(folder), "-o", str(partial), str(folder / "init.c")]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    except OSError as exc:
        raise FledgeError(f"cannot run the C compiler {compiler[0]}: {exc.strerror}") from None
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise _explain_failure(compiler, result.stdout + result.stderr)
    if elf_interpreter(partial) is not None:
        partial.unlink(missing_ok=True)
        raise FledgeError(
            f"{compiler[0]} produced a dynamically linked init although -static was given; "
            "use a compiler with a static C library (gcc with libc6-dev)"
        )
    os.replace(partial, target)
    return target
