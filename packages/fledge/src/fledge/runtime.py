"""The guest Python runtime: the interpreter kestrel runs on, packed under one prefix.

An image gets the host's interpreter (Debian's `/usr/bin/python3` by default) together with
its whole ELF closure — every shared library it and its extension modules need, plus the
dynamic loader itself — under `/opt/volant/python`, and a trimmed standard library compiled
to sourceless bytecode in `lib/python3.11/`. init runs the interpreter through the bundled loader
(docs/guest.md), so the runtime works on glibc images, musl images and images with no libc.

Compiling is done by the guest interpreter itself, so bytecode magic always matches, and
the result is cached per interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fledge.cache import default_cache_dir
from fledge.errors import FledgeError
from pluginspec.cpio import CpioEntry

GUEST_PYTHON = "/usr/bin/python3"
GUEST_PREFIX = "/opt/volant/python"
LOADER_NAME = "ld-linux-x86-64.so.2"

# Parts of the standard library a guest agent or workload helper never needs: tests, GUIs,
# installers, and modules whose C libraries (OpenSSL, ncurses, Berkeley DB...) would
# dominate the runtime's size.
TRIMMED_STDLIB = frozenset(
    {
        "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "lib2to3", "ensurepip",
        "distutils", "pydoc_data", "pydoc.py", "venv", "curses", "dbm", "sqlite3",
        "unittest", "site-packages", "dist-packages", "__phello__", "ssl.py", "doctest.py",
        "config-3.11-x86_64-linux-gnu", "xmlrpc", "wsgiref", "mailbox.py", "_pydecimal.py",
        "_pyio.py", "pdb.py", "pickletools.py", "imaplib.py", "nntplib.py", "smtplib.py",
        "ftplib.py", "telnetlib.py", "tabnanny.py", "mailcap.py",
    }
)  # fmt: skip
TRIMMED_EXTENSIONS = re.compile(
    r"^(_test\w*|_ctypes_test|xxlimited\w*|_xxtestfuzz|_xxsubinterpreters|_curses\w*|_dbm|nis"
    r"|readline|ossaudiodev|_ssl|_hashlib|_sqlite3|_crypt|audioop|_tkinter"
    r"|_codecs_(cn|hk|iso2022|jp|kr|tw)|_multibytecodec)\."
)

_DESCRIBE = """
import json, sys, sysconfig
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "tag": sys.implementation.cache_tag,
    "stdlib": sysconfig.get_paths()["stdlib"],
    "dynload": sysconfig.get_config_var("DESTSHARED"),
}))
"""

# Run by the guest interpreter: compile every .py under a stdlib tree into unchecked-hash
# .pyc files in the sourceless layout (``json.pyc`` where ``json.py`` was), reproducibly.
# A directory rather than a zip: at start-up zipimport parses the whole zip directory in
# Python, which under software emulation costs tens of milliseconds before the first import.
_COMPILE = """
import importlib.util, json, os, sys
from importlib._bootstrap_external import _code_to_hash_pyc
root, output, names = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
for name in names:
    source = open(root + "/" + name, "rb").read()
    code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    data = _code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False)
    target = os.path.join(output, name[:-3] + ".pyc")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as pyc:
        pyc.write(data)
"""


@dataclass(frozen=True)
class PythonRuntime:
    """The runtime's files on the host, ready to be placed under GUEST_PREFIX."""

    version: str
    interpreter: Path
    loader: Path
    libraries: tuple[Path, ...]
    extensions: tuple[Path, ...]
    stdlib: Path
    """The compiled standard library: a tree of sourceless ``.pyc`` files."""

    @property
    def stdlib_files(self) -> list[Path]:
        return sorted(path for path in self.stdlib.rglob("*.pyc"))

    @property
    def size(self) -> int:
        files = (self.interpreter, self.loader, *self.stdlib_files, *self.libraries,
                 *self.extensions)  # fmt: skip
        return sum(path.stat().st_size for path in files)


def _describe(python: str) -> dict[str, str]:
    if shutil.which(python) is None:
        raise FledgeError(
            f"the guest Python runtime is taken from {python}, which does not exist: "
            "install it with: apt-get install python3-minimal"
        )
    result = subprocess.run(
        [python, "-S", "-E", "-c", _DESCRIBE], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise FledgeError(f"{python} could not describe itself: {result.stderr.strip()}")
    described: dict[str, str] = json.loads(result.stdout)
    return described


def shared_library_closure(files: list[Path]) -> tuple[Path, list[Path]]:
    """The dynamic loader and every shared library `files` need, as `ldd` resolves them."""
    loader: Path | None = None
    libraries: dict[str, Path] = {}
    for file in files:
        result = subprocess.run(
            ["ldd", str(file)], capture_output=True, text=True, check=False, env={"LC_ALL": "C"}
        )
        for line in result.stdout.splitlines():
            line = line.strip()
            if "=>" in line:
                name, _, rest = line.partition("=>")
                target = rest.strip().split(" (")[0]
                if target == "not found":
                    raise FledgeError(f"{file} needs {name.strip()}, which is not installed")
                if target.startswith("/"):
                    libraries[name.strip()] = Path(target)
            elif line.startswith("/") and LOADER_NAME in line:
                loader = Path(line.split(" (")[0])
    if loader is None:
        raise FledgeError(f"{files[0]} is not a dynamically linked x86-64 glibc program")
    return loader, sorted(libraries.values(), key=lambda path: path.name)


def _stdlib_sources(stdlib: Path) -> list[str]:
    names = []
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if TRIMMED_STDLIB.intersection(relative.parts) or "__pycache__" in relative.parts:
            continue
        names.append(relative.as_posix())
    return names


def _identity(python: Path) -> str:
    status = python.stat()
    text = f"{python}\0{status.st_size}\0{status.st_mtime_ns}\0{sorted(TRIMMED_STDLIB)}\0{_COMPILE}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def prepare_runtime(python: str = GUEST_PYTHON, cache_dir: Path | None = None) -> PythonRuntime:
    """Gather (and cache) the runtime of `python`."""
    described = _describe(python)
    interpreter = Path(shutil.which(python) or python).resolve()
    dynload = Path(described["dynload"])
    extensions = sorted(
        path for path in dynload.glob("*.so") if not TRIMMED_EXTENSIONS.match(path.name)
    )
    loader, libraries = shared_library_closure([interpreter, *extensions])

    cache = (cache_dir or default_cache_dir()) / "python-runtime" / _identity(interpreter)
    stdlib = cache / f"python{described['version']}"
    if not stdlib.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        partial = stdlib.with_name(f".{stdlib.name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        names = _stdlib_sources(Path(described["stdlib"]))
        result = subprocess.run(
            [str(interpreter), "-S", "-E", "-c", _COMPILE, described["stdlib"], str(partial)],
            input=json.dumps(names),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise FledgeError(f"compiling the guest stdlib failed: {result.stderr.strip()}")
        try:
            partial.rename(stdlib)
        except OSError:  # another build finished it first
            shutil.rmtree(partial, ignore_errors=True)
    return PythonRuntime(
        described["version"], interpreter, loader.resolve(), tuple(libraries),
        tuple(extensions), stdlib,
    )  # fmt: skip


def _guest(path: str) -> str:
    return str(PurePosixPath(GUEST_PREFIX) / path)


def python_runtime_entries(
    python: str = GUEST_PYTHON, cache_dir: Path | None = None
) -> list[CpioEntry]:
    """Archive entries for the runtime of `python` under GUEST_PREFIX (docs/guest.md)."""
    runtime = prepare_runtime(python, cache_dir)
    version = runtime.version
    entries = [
        CpioEntry.file(_guest("bin/python3"), runtime.interpreter.read_bytes(), 0o755),
        CpioEntry.symlink(_guest(f"bin/python{version}"), "python3"),
        CpioEntry.file(_guest(f"lib/{LOADER_NAME}"), runtime.loader.read_bytes(), 0o755),
    ]
    for module in runtime.stdlib_files:
        relative = module.relative_to(runtime.stdlib).as_posix()
        path = _guest(f"lib/python{version}/{relative}")
        entries.append(CpioEntry.file(path, module.read_bytes()))
    for library in runtime.libraries:
        entries.append(
            CpioEntry.file(_guest(f"lib/{library.name}"), library.resolve().read_bytes(), 0o755)
        )
    for extension in runtime.extensions:
        entries.append(
            CpioEntry.file(
                _guest(f"lib/python{version}/lib-dynload/{extension.name}"),
                extension.read_bytes(),
                0o755,
            )
        )
    # getpath's landmark for the platform-dependent prefix (there may be no extensions)
    entries.append(CpioEntry.directory(_guest(f"lib/python{version}/lib-dynload")))
    return entries


def main() -> None:
    """`python -m fledge.runtime [PYTHON]`: print what the runtime of PYTHON holds."""
    python = sys.argv[1] if len(sys.argv) > 1 else GUEST_PYTHON
    runtime = prepare_runtime(python)
    print(f"Python {runtime.version} from {runtime.interpreter}")
    print(f"loader {runtime.loader}")
    for library in runtime.libraries:
        print(f"library {library}")
    print(f"{len(runtime.extensions)} extension modules, "
          f"stdlib {runtime.stdlib} ({len(runtime.stdlib_files)} modules)")  # fmt: skip
    print(f"total {runtime.size / 2**20:.1f} MiB uncompressed")


if __name__ == "__main__":
    main()
