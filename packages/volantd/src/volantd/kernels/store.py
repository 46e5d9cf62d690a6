"""The installed guest kernels: `VOLANT_HOME/kernels/<name>/`, content-checked on every load.

Each kernel directory holds the image (`vmlinuz` for a bzImage, `vmlinux` for an ELF image),
`modules.cpio` (when the kernel needs modules) and `kernel.json`, which records the release,
where the kernel came from, the sha256 and size of each file, and the guest paths of the
modules in load order. A directory is built beside its final place and renamed into it, so a
reader never sees a half-installed kernel. `kernels/default` names the default kernel when an
operator chose one; otherwise the newest fetched reference kernel is the default.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pluginspec.cpio import CpioEntry, write_cpio
from volantd.kernels.debian import (
    Progress,
    download_package,
    file_sha256,
    read_kernel_package,
    resolve_reference_package,
)
from volantd.kernels.errors import (
    KernelError,
    KernelImageError,
    KernelIntegrityError,
    KernelNotFoundError,
)
from volantd.kernels.image import ImageFormat, KernelImage, bzimage_version, inspect_kernel_image
from volantd.kernels.modinfo import normalise_module_name, parse_modinfo
from volantd.kernels.moduletree import DirectoryModuleTree, ModuleTree
from volantd.kernels.selection import GUEST_MODULES, ModuleSelection, select_modules
from volantd.paths import cache_dir, kernels_dir

METADATA_FILE = "kernel.json"
MODULES_CPIO = "modules.cpio"
DEFAULT_MARKER = "default"
METADATA_FORMAT = 1
IMAGE_FILES = {ImageFormat.BZIMAGE: "vmlinuz", ImageFormat.VMLINUX: "vmlinux"}
_LOCK_FILE = ".lock"
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


@dataclass(frozen=True)
class KernelSource:
    """Where an installed kernel came from: the Debian package, or the imported files."""

    kind: Literal["debian", "import"]
    package: str | None = None
    package_version: str | None = None
    path: str | None = None
    modules_path: str | None = None

    def describe(self) -> str:
        if self.kind == "debian":
            return f"{self.package} {self.package_version}"
        return f"imported from {self.path}"


@dataclass(frozen=True)
class StoredFile:
    """One file of an installed kernel and the digest it must still have."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class KernelEntry:
    """An installed kernel, ready to hand to a hypervisor driver."""

    name: str
    version: str  # the kernel release, as `uname -r` prints it in the guest
    image_format: ImageFormat
    image: Path
    modules_cpio: Path | None
    modules: tuple[str, ...]  # guest paths of the modules in the cpio, in load order
    module_needs: dict[str, tuple[str, ...]] | None
    """Guest path -> the guest paths loaded before it; None in entries from before it was kept."""
    builtin_modules: tuple[str, ...]  # wanted drivers the kernel has built in
    size: int  # bytes of image plus modules cpio
    is_default: bool
    source: KernelSource
    directory: Path
    installed_at: str
    files: tuple[StoredFile, ...]
    wanted_modules: tuple[str, ...] = ()
    """The guest drivers volantd asked for when it installed the modules (GUEST_MODULES then):
    a fetch re-extracts an entry made for another set."""

    def modules_for(self, drivers: Iterable[str]) -> tuple[str, ...]:
        """The modules (guest paths, in load order) that give a guest `drivers`.

        Drivers are module names (`virtio_net`); those built into the kernel need nothing, and
        everything they depend on comes along. Entries installed before dependencies were
        recorded give every module.
        """
        if self.module_needs is None:
            return self.modules
        by_name = {module_name(path): path for path in self.modules}
        wanted: set[str] = set()
        pending = [by_name[name] for name in map(normalise_module_name, drivers) if name in by_name]
        while pending:
            path = pending.pop()
            if path not in wanted:
                wanted.add(path)
                pending.extend(self.module_needs.get(path, ()))
        return tuple(path for path in self.modules if path in wanted)

    def lacking(self, drivers: Iterable[str]) -> list[str]:
        """The `drivers` this entry has neither as a module nor built in."""
        have = {module_name(path) for path in self.modules} | set(self.builtin_modules)
        return [name for name in drivers if normalise_module_name(name) not in have]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "format": str(self.image_format),
            "image": str(self.image),
            "modules_cpio": str(self.modules_cpio) if self.modules_cpio else None,
            "modules": list(self.modules),
            "builtin_modules": list(self.builtin_modules),
            "size": self.size,
            "default": self.is_default,
            "source": {k: v for k, v in vars(self.source).items() if v is not None},
            "installed_at": self.installed_at,
        }


def module_name(guest_path: str) -> str:
    """`/lib/modules/<release>/.../virtio-rng.ko` -> `virtio_rng`."""
    return normalise_module_name(guest_path.rsplit("/", 1)[-1].split(".", 1)[0])


def _module_needs(value: Any) -> dict[str, tuple[str, ...]] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("module_needs is not an object")
    return {str(path): tuple(map(str, needs)) for path, needs in value.items()}


def reference_kernel_name(kernel_version: str) -> str:
    """The store name of the fetched Debian kernel of this release."""
    return f"debian-{kernel_version}"


def _digest(name: str, data: bytes) -> StoredFile:
    return StoredFile(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def _file_digest(path: Path) -> StoredFile:
    return StoredFile(name=path.name, sha256=file_sha256(path), size=path.stat().st_size)


def _ignore_progress(message: str) -> None:
    del message


def _reinstall_hint(source: KernelSource | None, name: str) -> str:
    if source is not None and source.kind == "import":
        modules = f" --modules {source.modules_path}" if source.modules_path else ""
        return (
            f"import it again with `volantd kernels import {source.path}{modules} "
            f"--name {name} --force`"
        )
    return "reinstall it with `volantd kernels fetch --force`"


class KernelStore:
    """The kernels under `root` (normally `VOLANT_HOME/kernels`).

    `cache` holds downloaded packages (`<cache>/sha256/<hex>`); it defaults to the
    `cache` folder beside `root`.
    """

    def __init__(self, root: Path, cache: Path | None = None) -> None:
        self.root = root
        self.cache = cache if cache is not None else cache_dir(root.parent)

    @classmethod
    def from_environment(cls) -> KernelStore:
        """The store of this host: `VOLANT_HOME/kernels`, downloads in `paths.cache_dir()`."""
        return cls(kernels_dir(), cache_dir())

    # Reading

    def list(self) -> builtins.list[KernelEntry]:
        """Every installed kernel, by name (metadata only; `get` checks the content)."""
        entries = [self._read_entry(directory) for directory in self._kernel_dirs()]
        default = self._default_name(entries)
        return [self._with_default(entry, default) for entry in entries]

    def get(self, name: str | None = None) -> KernelEntry:
        """The kernel called `name` (None: the default), after checking its files' digests."""
        entries = self.list()
        if name is None:
            entry = next((entry for entry in entries if entry.is_default), None)
            if entry is None:
                raise KernelNotFoundError(self._no_default_message(entries))
        else:
            entry = next((entry for entry in entries if entry.name == name), None)
            if entry is None:
                installed = ", ".join(e.name for e in entries) or "none"
                raise KernelNotFoundError(
                    f"no kernel named {name!r} is installed (installed: {installed}); "
                    "see `volantd kernels list`"
                )
        self.verify(entry)
        return entry

    def verify(self, entry: KernelEntry) -> None:
        """Raise KernelIntegrityError unless every file still has its recorded sha256 and size."""
        for expected in entry.files:
            path = entry.directory / expected.name
            try:
                found = _file_digest(path)
            except OSError as error:
                problem = f"{path} cannot be read ({error.strerror})"
            else:
                if found == expected:
                    continue
                problem = (
                    f"{path} is corrupted: expected {expected.size} bytes with sha256 "
                    f"{expected.sha256}, found {found.size} bytes with sha256 {found.sha256}"
                )
            raise KernelIntegrityError(
                f"kernel {entry.name}: {problem}; {_reinstall_hint(entry.source, entry.name)}"
            )

    def default_name(self) -> str | None:
        """The name of the default kernel, if there is one."""
        return self._default_name(self.list())

    # Installing

    def fetch(self, force: bool = False, *, progress: Progress | None = None) -> KernelEntry:
        """Install Debian's cloud kernel (`linux-image-cloud-amd64`) with the guest modules.

        A no-op when the same package version is installed and intact, unless `force`.
        """
        report = progress or _ignore_progress
        package = resolve_reference_package()
        name = reference_kernel_name(package.kernel_version)
        report(f"Reference kernel package: {package.name} {package.version}")
        with self._locked():
            if not force and (current := self._intact_entry(name, report)) is not None:
                source = current.source
                same_package = (source.package, source.package_version) == (
                    package.name, package.version
                )  # fmt: skip
                wanted = tuple(module.name for module in GUEST_MODULES)
                if same_package and current.wanted_modules == wanted:
                    report(f"Kernel {name} is up to date ({package.name} {package.version})")
                    return current
                if same_package:
                    report(f"Kernel {name} was installed with another set of guest modules; "
                           "extracting them again")  # fmt: skip
            deb = download_package(package, self.cache, report)
            report(f"Extracting the kernel and its modules from {deb}")
            kernel = read_kernel_package(deb)
            version = bzimage_version(kernel.image)
            if version != package.kernel_version or kernel.tree.kernel_version != version:
                raise KernelError(
                    f"{package.name} holds kernel release {version} with modules for "
                    f"{kernel.tree.kernel_version}; expected {package.kernel_version}"
                )
            self._install(
                name,
                kernel.image,
                KernelImage(ImageFormat.BZIMAGE, version),
                KernelSource("debian", package=package.name, package_version=package.version),
                kernel.tree,
                select_modules(kernel.tree.index()),
            )
        entry = self.get(name)
        report(f"Installed kernel {name} ({len(entry.modules)} modules)")
        return entry

    def import_kernel(
        self,
        image: Path,
        modules_dir: Path | None = None,
        name: str | None = None,
        *,
        make_default: bool = False,
        replace: bool = False,
    ) -> KernelEntry:
        """Register a bzImage or vmlinux, with the guest modules from `modules_dir` if given.

        `modules_dir` is a `lib/modules/<release>` directory or its parent; `name` defaults
        to the image's release. An existing kernel of that name is replaced only if `replace`.
        """
        kernel = inspect_kernel_image(image)
        name = name or kernel.version
        if not _VALID_NAME.fullmatch(name) or name == DEFAULT_MARKER:
            raise KernelError(
                f"invalid kernel name {name!r}: use letters, digits, '.', '_', '+', '-' "
                f"(starting with a letter or digit), and not {DEFAULT_MARKER!r}"
            )
        tree = DirectoryModuleTree.locate(modules_dir, kernel.version) if modules_dir else None
        if tree is not None and tree.kernel_version != kernel.version:
            raise KernelError(
                f"the modules in {tree.directory} are for kernel {tree.kernel_version}, but "
                f"{image} is kernel {kernel.version}; pass the matching lib/modules/<release>"
            )
        selection = select_modules(tree.index()) if tree is not None else None
        source = KernelSource(
            "import",
            path=str(image.resolve()),
            modules_path=str(tree.directory.resolve()) if tree is not None else None,
        )
        with self._locked():
            if (self.root / name).exists() and not replace:
                raise KernelError(
                    f"a kernel named {name!r} is already installed; choose another name "
                    "(--name) or replace it (--force)"
                )
            try:
                image_data = image.read_bytes()
            except OSError as error:
                raise KernelImageError(f"cannot read {image}: {error.strerror}") from error
            self._install(name, image_data, kernel, source, tree, selection)
            if make_default:
                self._write_default_marker(name)
        return self.get(name)

    def set_default(self, name: str) -> KernelEntry:
        """Make `name` the kernel that `get()` returns."""
        with self._locked():
            self.get(name)
            self._write_default_marker(name)
        return self.get(name)

    # Internals

    def _kernel_dirs(self) -> builtins.list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            path
            for path in self.root.iterdir()
            if not path.name.startswith(".") and (path / METADATA_FILE).is_file()
        )

    def _read_entry(self, directory: Path) -> KernelEntry:
        metadata_file = directory / METADATA_FILE
        try:
            metadata = json.loads(metadata_file.read_text())
            if metadata.get("format") != METADATA_FORMAT:
                raise ValueError(f"unknown metadata format {metadata.get('format')!r}")
            source = KernelSource(**metadata["source"])
            files = tuple(StoredFile(**file) for file in metadata["files"])
            cpio = metadata["modules_cpio"]
            return KernelEntry(
                name=metadata["name"],
                version=metadata["version"],
                image_format=ImageFormat(metadata["image_format"]),
                image=directory / metadata["image"],
                modules_cpio=directory / cpio if cpio else None,
                modules=tuple(metadata["modules"]),
                module_needs=_module_needs(metadata.get("module_needs")),
                builtin_modules=tuple(metadata["builtin_modules"]),
                size=sum(file.size for file in files),
                is_default=False,
                source=source,
                directory=directory,
                installed_at=metadata["installed_at"],
                files=files,
                wanted_modules=tuple(metadata.get("wanted_modules", ())),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise KernelIntegrityError(
                f"kernel {directory.name}: {metadata_file} is unreadable ({error}); "
                f"{_reinstall_hint(None, directory.name)} or remove {directory}"
            ) from error

    @staticmethod
    def _with_default(entry: KernelEntry, default: str | None) -> KernelEntry:
        if entry.name != default:
            return entry
        return KernelEntry(**{**vars(entry), "is_default": True})

    def _default_name(self, entries: builtins.list[KernelEntry]) -> str | None:
        marker = self.root / DEFAULT_MARKER
        if marker.is_file():
            return marker.read_text().strip() or None
        reference = [entry for entry in entries if entry.source.kind == "debian"]
        if reference:
            return max(reference, key=lambda entry: (entry.installed_at, entry.name)).name
        return entries[0].name if len(entries) == 1 else None

    def _no_default_message(self, entries: builtins.list[KernelEntry]) -> str:
        marker = self.root / DEFAULT_MARKER
        if marker.is_file():
            return (
                f"the default kernel {marker.read_text().strip()!r} (named in {marker}) is not "
                "installed; choose another with `volantd kernels default NAME`"
            )
        if not entries:
            return "no kernel is installed; run `volantd kernels fetch`"
        return (
            "no default kernel: several kernels are installed and none is marked; "
            "choose one with `volantd kernels default NAME`"
        )

    def _intact_entry(self, name: str, report: Progress) -> KernelEntry | None:
        if not (self.root / name / METADATA_FILE).is_file():
            return None
        try:
            entry = self._read_entry(self.root / name)
            self.verify(entry)
        except KernelIntegrityError as error:
            report(f"{error}: reinstalling")
            return None
        if entry.modules and entry.module_needs is None:
            report(f"kernel {name} was installed before module dependencies were recorded: "
                   "reinstalling")  # fmt: skip
            return None
        return self._with_default(entry, self._default_name(self.list()))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / _LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._remove_leftovers()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _remove_leftovers(self) -> None:
        # Staging or retired directories of an install that crashed before cleaning up.
        for pattern in (".*.partial", ".*.retired"):
            for path in self.root.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def _install(
        self,
        name: str,
        image: bytes,
        kernel: KernelImage,
        source: KernelSource,
        tree: ModuleTree | None,
        selection: ModuleSelection | None,
    ) -> None:
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=self.root))
        try:
            staging.chmod(0o755)
            image_name = IMAGE_FILES[kernel.format]
            (staging / image_name).write_bytes(image)
            files = [_digest(image_name, image)]
            guest_modules: builtins.list[str] = []
            module_needs: dict[str, builtins.list[str]] = {}
            if tree is not None and selection is not None and selection.modules:
                guest_modules = self._write_modules_cpio(staging, kernel.version, tree, selection)
                files.append(_file_digest(staging / MODULES_CPIO))
                guest_path = dict(
                    zip((m.name for m in selection.modules), guest_modules, strict=True)
                )
                module_needs = {
                    guest_path[name]: [guest_path[need] for need in needs]
                    for name, needs in selection.needs.items()
                }
            metadata = {
                "format": METADATA_FORMAT,
                "name": name,
                "version": kernel.version,
                "image_format": str(kernel.format),
                "image": image_name,
                "modules_cpio": MODULES_CPIO if guest_modules else None,
                "modules": guest_modules,
                "module_needs": module_needs,
                "builtin_modules": list(selection.builtin) if selection else [],
                "wanted_modules": [module.name for module in GUEST_MODULES] if selection else [],
                "source": {k: v for k, v in vars(source).items() if v is not None},
                "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": [vars(file) for file in files],
            }
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
            self._move_into_place(staging, self.root / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @staticmethod
    def _write_modules_cpio(
        staging: Path, version: str, tree: ModuleTree, selection: ModuleSelection
    ) -> builtins.list[str]:
        bodies = tree.read([module.path for module in selection.modules])
        entries: builtins.list[CpioEntry] = []
        guest_paths: builtins.list[str] = []
        for module in selection.modules:
            body = bodies[module.path]
            built_for = parse_modinfo(body, module.path).kernel_release
            if built_for is not None and built_for != version:
                raise KernelError(
                    f"module {module.path} was built for kernel {built_for}, not {version}; "
                    "it would not load"
                )
            guest_path = f"/lib/modules/{version}/{module.stored_path}"
            entries.append(CpioEntry.file(guest_path, body))
            guest_paths.append(guest_path)
        write_cpio(staging / MODULES_CPIO, entries)
        return guest_paths

    def _move_into_place(self, staging: Path, target: Path) -> None:
        if not target.exists():
            os.rename(staging, target)
            return
        retired = self.root / f".{target.name}.{uuid.uuid4().hex}.retired"
        os.rename(target, retired)
        os.rename(staging, target)
        shutil.rmtree(retired, ignore_errors=True)

    def _write_default_marker(self, name: str) -> None:
        marker = self.root / DEFAULT_MARKER
        partial = self.root / f".{DEFAULT_MARKER}.{uuid.uuid4().hex}.partial"
        partial.write_text(name + "\n")
        os.replace(partial, marker)
