"""The reference guest kernel: Debian's cloud kernel package, downloaded with apt, not installed.

`apt-get download` fetches the .deb into a content-addressed cache (`<cache>/sha256/<hex>`,
checked against the digest apt publishes), and `dpkg-deb --fsys-tarfile` streams its files:
the package is read twice (once to index every module's `.modinfo`, once to take the chosen
modules), so neither the whole module tree nor the package is ever unpacked to disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from volantd.hosttools import require_tool
from volantd.kernels.errors import KernelError, PackageFetchError
from volantd.kernels.modinfo import decompress_module, is_module_path, parse_modinfo
from volantd.kernels.moduletree import (
    MODULES_BUILTIN,
    MODULES_BUILTIN_MODINFO,
    KernelModule,
    ModuleIndex,
    build_index,
    module_from_modinfo,
)

REFERENCE_METAPACKAGE = "linux-image-cloud-amd64"
APT_UPDATE_HINT = "run `apt-get update` (as root) and retry"
_MODULE_MEMBER = re.compile(r"^(?:usr/)?lib/modules/(?P<release>[^/]+)/(?P<path>.+)$")
_IMAGE_MEMBER = re.compile(r"^boot/vmlinuz-(?P<release>.+)$")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DebianPackage:
    """One version of a Debian package, as apt's package lists describe it."""

    name: str
    version: str
    sha256: str
    size: int

    @property
    def kernel_version(self) -> str:
        """Debian names kernel packages after the release: linux-image-<uname -r>."""
        return self.name.removeprefix("linux-image-")


def _apt_env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C", "LANG": "C"}


def parse_control_stanza(text: str) -> dict[str, str]:
    """The fields of the first stanza of deb822 text (`Field: value`, continuation lines)."""
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0].isspace() and last is not None:
            fields[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = key.strip()
            fields[last] = value.strip()
    return fields


def apt_show(package: str) -> dict[str, str]:
    """apt's record of the candidate version of `package`."""
    result = subprocess.run(
        [
            require_tool("apt-cache", "find the reference kernel package"),
            "show",
            "--no-all-versions",
            package,
        ],
        capture_output=True,
        text=True,
        env=_apt_env(),
        check=False,
    )
    fields = parse_control_stanza(result.stdout) if result.returncode == 0 else {}
    if "Version" not in fields:
        detail = result.stderr.strip().splitlines()[-1:] or ["no candidate version"]
        raise PackageFetchError(
            f"apt knows no installable {package} ({detail[0]}): its package lists are missing "
            f"or lack that package; {APT_UPDATE_HINT}"
        )
    return fields


def kernel_dependency(depends: str, metapackage: str) -> str:
    """The concrete `linux-image-<release>` named in a metapackage's Depends field."""
    for clause in depends.split(","):
        for alternative in clause.split("|"):
            name = alternative.split("(")[0].strip().split(":")[0]
            if name.startswith("linux-image-") and name != metapackage:
                return name
    raise PackageFetchError(
        f"{metapackage} depends on no linux-image package (Depends: {depends!r}); {APT_UPDATE_HINT}"
    )


def resolve_reference_package(metapackage: str = REFERENCE_METAPACKAGE) -> DebianPackage:
    """The concrete kernel package (name, candidate version, digest) behind `metapackage`."""
    name = kernel_dependency(apt_show(metapackage).get("Depends", ""), metapackage)
    fields = apt_show(name)
    try:
        return DebianPackage(
            name=name,
            version=fields["Version"],
            sha256=fields["SHA256"].lower(),
            size=int(fields["Size"]),
        )
    except (KeyError, ValueError) as error:
        raise PackageFetchError(
            f"apt's record of {name} lacks a usable {error} field; {APT_UPDATE_HINT}"
        ) from error


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cached_package_path(package: DebianPackage, cache: Path) -> Path:
    return cache / "sha256" / package.sha256


def download_package(package: DebianPackage, cache: Path, progress: Progress) -> Path:
    """The package's .deb in the cache, downloaded with `apt-get download` only if missing.

    The file is checked against apt's SHA256 both when reused and after download.
    """
    target = cached_package_path(package, cache)
    if target.is_file() and target.stat().st_size == package.size:
        if file_sha256(target) == package.sha256:
            progress(f"Using cached {package.name} {package.version} ({target})")
            return target
        progress(f"Cached {target} is corrupted; downloading it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    apt_get = require_tool("apt-get", "download the reference kernel package")
    progress(f"Downloading {package.name} {package.version} ({package.size / 2**20:.1f} MiB)")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as workdir:
        argv = [apt_get, "download", f"{package.name}={package.version}"]
        if os.geteuid() == 0:
            # apt drops to the _apt user, which cannot write into a root-owned private folder.
            argv[1:1] = ["-o", "APT::Sandbox::User=root"]
        result = subprocess.run(
            argv, cwd=workdir, capture_output=True, text=True, env=_apt_env(), check=False
        )
        downloads = sorted(Path(workdir).glob("*.deb"))
        if result.returncode != 0 or len(downloads) != 1:
            detail = "\n".join(result.stderr.strip().splitlines()[-3:]) or "no .deb was written"
            raise PackageFetchError(
                f"apt-get download {package.name}={package.version} failed: {detail}\n"
                f"If the version is no longer on the mirror, {APT_UPDATE_HINT}"
            )
        if (digest := file_sha256(downloads[0])) != package.sha256:
            raise PackageFetchError(
                f"downloaded {downloads[0].name} has sha256 {digest}, but apt lists "
                f"{package.sha256}; {APT_UPDATE_HINT}"
            )
        os.replace(downloads[0], target)
    return target


@contextmanager
def _package_files(deb: Path) -> Iterator[Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]]:
    """The regular files of `deb` as (path without ./, archive, member), streamed in order."""
    process = subprocess.Popen(
        [
            require_tool("dpkg-deb", "unpack the reference kernel package"),
            "--fsys-tarfile",
            str(deb),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout: IO[bytes] = process.stdout  # type: ignore[assignment]

    def members() -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
        with tarfile.open(fileobj=stdout, mode="r|") as archive:
            for member in archive:
                if member.isfile():
                    yield member.name.removeprefix("./"), archive, member

    broken: tarfile.TarError | None = None
    try:
        yield members()
        stdout.read()  # drain the tar padding so dpkg-deb exits cleanly
    except tarfile.TarError as error:
        broken = error
    finally:
        stdout.close()
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        process.wait()
    if process.returncode != 0:
        raise PackageFetchError(f"dpkg-deb --fsys-tarfile {deb} failed: {stderr.strip()}")
    if broken is not None:
        raise PackageFetchError(f"{deb} is not a readable Debian package: {broken}") from broken


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    file = archive.extractfile(member)
    if file is None:
        raise PackageFetchError(f"cannot read {member.name} from the kernel package")
    return file.read()


@dataclass(frozen=True)
class DebianKernel:
    """A kernel package's image and module tree, read without installing the package."""

    image: bytes
    tree: DebianModuleTree


class DebianModuleTree:
    """The `lib/modules/<release>` tree inside a kernel .deb (see `read_kernel_package`)."""

    def __init__(self, deb: Path, kernel_version: str, index: ModuleIndex) -> None:
        self.deb = deb
        self._kernel_version = kernel_version
        self._index = index

    @property
    def kernel_version(self) -> str:
        return self._kernel_version

    def index(self) -> ModuleIndex:
        return self._index

    def read(self, paths: Collection[str]) -> dict[str, bytes]:
        wanted = set(paths)
        bodies: dict[str, bytes] = {}
        with _package_files(self.deb) as files:
            for name, archive, member in files:
                match = _MODULE_MEMBER.match(name)
                if match and match["path"] in wanted:
                    bodies[match["path"]] = decompress_module(_read(archive, member), name)
        if missing := sorted(wanted - bodies.keys()):
            raise KernelError(f"{self.deb} lacks the modules {', '.join(missing)}")
        return bodies


def read_kernel_package(deb: Path) -> DebianKernel:
    """Stream `deb` once: keep `/boot/vmlinuz-*`, index every module's `.modinfo`."""
    image: bytes | None = None
    releases: set[str] = set()
    modules: list[KernelModule] = []
    aliases: list[tuple[str, str]] = []
    builtin_list: str | None = None
    builtin_modinfo: bytes | None = None
    with _package_files(deb) as files:
        for name, archive, member in files:
            if _IMAGE_MEMBER.match(name):
                image = _read(archive, member)
                continue
            match = _MODULE_MEMBER.match(name)
            if not match:
                continue
            releases.add(match["release"])
            path = match["path"]
            if is_module_path(path):
                body = decompress_module(_read(archive, member), name)
                info = parse_modinfo(body, f"{deb.name}:{name}")
                module = module_from_modinfo(path, info)
                modules.append(module)
                aliases.extend((alias, module.name) for alias in info.aliases)
            elif path == MODULES_BUILTIN:
                builtin_list = _read(archive, member).decode(errors="replace")
            elif path == MODULES_BUILTIN_MODINFO:
                builtin_modinfo = _read(archive, member)
    if image is None or len(releases) != 1:
        found = ", ".join(sorted(releases)) or "none"
        raise KernelError(
            f"{deb} is not a single-kernel image package (vmlinuz found: {image is not None}; "
            f"module trees: {found})"
        )
    (release,) = releases
    index = build_index(
        origin=f"{deb.name} (lib/modules/{release})",
        modules=modules,
        aliases=aliases,
        builtin_list=builtin_list,
        builtin_modinfo=builtin_modinfo,
    )
    return DebianKernel(image=image, tree=DebianModuleTree(deb, release, index))
