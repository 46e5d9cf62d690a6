"""A kernel's module tree (`lib/modules/<release>`): which modules exist and what each needs.

Two sources build the same `ModuleIndex`: a directory on disk (`DirectoryModuleTree`, used by
`kernels import --modules`) and the Debian package read as a stream (`volantd.kernels.debian`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from volantd.kernels.errors import KernelError, ModuleInfoError
from volantd.kernels.modinfo import (
    ModInfo,
    decompress_module,
    is_module_path,
    module_name_from_path,
    normalise_module_name,
    parse_modinfo,
    parse_softdep,
    uncompressed_module_path,
)

MODULES_BUILTIN = "modules.builtin"
MODULES_BUILTIN_MODINFO = "modules.builtin.modinfo"
MODULES_ORDER = "modules.order"
MODULES_DEP = "modules.dep"
MODULES_SOFTDEP = "modules.softdep"
MODULES_ALIAS = "modules.alias"


@dataclass(frozen=True)
class KernelModule:
    """One loadable module: its normalised name, file and what must be loaded before it."""

    name: str
    path: str  # relative to lib/modules/<release>, as found (possibly compressed)
    depends: tuple[str, ...] = ()
    softdep_pre: tuple[str, ...] = ()  # as written: module names or aliases

    @property
    def stored_path(self) -> str:
        """Where the module lives in the modules cpio, relative to lib/modules/<release>."""
        return uncompressed_module_path(self.path)


@dataclass(frozen=True)
class ModuleIndex:
    """Everything needed to choose modules and order them, without reading module bodies."""

    origin: str  # where the tree came from, for error messages
    modules: Mapping[str, KernelModule]
    builtin: frozenset[str] = frozenset()
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # alias -> module names
    has_builtin_list: bool = True


class ModuleTree(Protocol):
    """A source of modules for one kernel release."""

    @property
    def kernel_version(self) -> str: ...

    def index(self) -> ModuleIndex: ...

    def read(self, paths: Collection[str]) -> dict[str, bytes]:
        """The uncompressed ELF objects of the modules at `paths` (as in `KernelModule.path`)."""
        ...


def parse_modules_builtin(text: str) -> frozenset[str]:
    """Names of the built-in modules listed in `modules.builtin` (one path per line)."""
    return frozenset(
        module_name_from_path(line.strip()) for line in text.splitlines() if line.strip()
    )


def parse_builtin_aliases(raw: bytes) -> list[tuple[str, str]]:
    """(alias, module) pairs from `modules.builtin.modinfo` (`module.alias=value` strings)."""
    pairs: list[tuple[str, str]] = []
    for entry in raw.split(b"\0"):
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        module, dot, attribute = key.partition(".")
        if sep and dot and attribute == "alias":
            pairs.append((value, normalise_module_name(module)))
    return pairs


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """`modules.dep` as {module path: [paths of its dependencies]}."""
    dependencies: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, deps = line.partition(":")
        if sep and path.strip():
            dependencies[path.strip()] = deps.split()
    return dependencies


def parse_modules_softdep(text: str) -> dict[str, tuple[str, ...]]:
    """`modules.softdep` (`softdep NAME pre: A B post: C`) as {module: its pre-softdeps}."""
    softdeps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        words = line.split(maxsplit=2)
        if len(words) == 3 and words[0] == "softdep":
            pre, _ = parse_softdep(words[2])
            name = normalise_module_name(words[1])
            softdeps[name] = softdeps.get(name, ()) + pre
    return softdeps


def parse_modules_alias(text: str) -> list[tuple[str, str]]:
    """(alias, module) pairs from `modules.alias` (`alias PATTERN MODULE` lines)."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias":
            pairs.append((words[1], normalise_module_name(words[2])))
    return pairs


def module_from_modinfo(path: str, info: ModInfo) -> KernelModule:
    return KernelModule(
        name=info.name or module_name_from_path(path),
        path=path,
        depends=info.depends,
        softdep_pre=info.softdep_pre,
    )


def _preferred(current: KernelModule | None, candidate: KernelModule) -> KernelModule:
    # Like depmod: a module under updates/ overrides the one the kernel shipped.
    if current is None:
        return candidate
    if candidate.path.startswith("updates/") and not current.path.startswith("updates/"):
        return candidate
    return current


def build_index(
    origin: str,
    modules: Iterable[KernelModule],
    aliases: Iterable[tuple[str, str]] = (),
    builtin_list: str | None = None,
    builtin_modinfo: bytes | None = None,
) -> ModuleIndex:
    """Assemble a `ModuleIndex` from modules and the text of the tree's `modules.*` files."""
    by_name: dict[str, KernelModule] = {}
    for module in sorted(modules, key=lambda m: m.path):
        by_name[module.name] = _preferred(by_name.get(module.name), module)
    providers: dict[str, list[str]] = {}
    all_aliases = list(aliases)
    builtin = parse_modules_builtin(builtin_list) if builtin_list is not None else frozenset()
    if builtin_modinfo is not None:
        builtin_aliases = parse_builtin_aliases(builtin_modinfo)
        all_aliases.extend(builtin_aliases)
        builtin |= {name for _, name in builtin_aliases}
    for alias, name in all_aliases:
        names = providers.setdefault(alias, [])
        if name not in names:
            names.append(name)
    return ModuleIndex(
        origin=origin,
        modules=by_name,
        builtin=builtin,
        aliases={alias: tuple(sorted(names)) for alias, names in providers.items()},
        has_builtin_list=builtin_list is not None,
    )


def _looks_like_module_tree(directory: Path) -> bool:
    markers = (MODULES_BUILTIN, MODULES_DEP, MODULES_ORDER)
    return (
        any((directory / marker).is_file() for marker in markers) or (directory / "kernel").is_dir()
    )


class DirectoryModuleTree:
    """A `lib/modules/<release>` directory on disk (e.g. from `make modules_install`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._index: ModuleIndex | None = None

    @classmethod
    def locate(cls, path: Path, kernel_version: str | None = None) -> DirectoryModuleTree:
        """The module tree at `path`: `lib/modules/<release>` itself or its parent."""
        expected = "a lib/modules/<release> directory or its parent"
        if not path.is_dir():
            raise KernelError(f"modules directory {path} does not exist; expected {expected}")
        if _looks_like_module_tree(path):
            return cls(path)
        if kernel_version and _looks_like_module_tree(path / kernel_version):
            return cls(path / kernel_version)
        trees = sorted(d for d in path.iterdir() if d.is_dir() and _looks_like_module_tree(d))
        if len(trees) == 1:
            return cls(trees[0])
        if not trees:
            raise KernelError(
                f"{path} holds no kernel modules (no modules.builtin, modules.dep, modules.order "
                f"or kernel/ folder); expected {expected}"
            )
        names = ", ".join(tree.name for tree in trees)
        wanted = f" none matches the image's release {kernel_version};" if kernel_version else ""
        raise KernelError(
            f"{path} holds module trees for several kernels ({names});{wanted} "
            "pass the lib/modules/<release> directory itself"
        )

    @property
    def kernel_version(self) -> str:
        return self.directory.name

    def index(self) -> ModuleIndex:
        """Dependencies from `modules.dep` when depmod has run, else from each `.modinfo`."""
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def read(self, paths: Collection[str]) -> dict[str, bytes]:
        bodies: dict[str, bytes] = {}
        for path in paths:
            file = self.directory / path
            try:
                bodies[path] = decompress_module(file.read_bytes(), path)
            except OSError as error:
                raise ModuleInfoError(f"cannot read module {file}: {error.strerror}") from error
        return bodies

    def _text(self, name: str) -> str | None:
        file = self.directory / name
        return file.read_text(errors="replace") if file.is_file() else None

    def _relative(self, path: str) -> str:
        # Old depmod wrote absolute paths into modules.dep.
        prefix = f"/lib/modules/{self.kernel_version}/"
        return path.removeprefix(prefix) if path.startswith(prefix) else path

    def _build_index(self) -> ModuleIndex:
        builtin_modinfo = self.directory / MODULES_BUILTIN_MODINFO
        builtin_raw = builtin_modinfo.read_bytes() if builtin_modinfo.is_file() else None
        dep_text = self._text(MODULES_DEP)
        if dep_text is not None:
            softdeps = parse_modules_softdep(self._text(MODULES_SOFTDEP) or "")
            modules = []
            for path, deps in parse_modules_dep(dep_text).items():
                name = module_name_from_path(path)
                modules.append(
                    KernelModule(
                        name=name,
                        path=self._relative(path),
                        depends=tuple(module_name_from_path(dep) for dep in deps),
                        softdep_pre=softdeps.get(name, ()),
                    )
                )
            aliases = parse_modules_alias(self._text(MODULES_ALIAS) or "")
        else:
            modules, aliases = [], []
            for path in self._module_paths():
                body = self.read([path])[path]
                info = parse_modinfo(body, str(self.directory / path))
                module = module_from_modinfo(path, info)
                modules.append(module)
                aliases.extend((alias, module.name) for alias in info.aliases)
        return build_index(
            origin=str(self.directory),
            modules=modules,
            aliases=aliases,
            builtin_list=self._text(MODULES_BUILTIN),
            builtin_modinfo=builtin_raw,
        )

    def _module_paths(self) -> list[str]:
        paths: list[str] = []
        # os.walk does not follow the `build`/`source` symlinks into kernel headers.
        for folder, _, files in os.walk(self.directory):
            relative = PurePosixPath(Path(folder).relative_to(self.directory).as_posix())
            paths.extend(str(relative / name) for name in files if is_module_path(name))
        return sorted(path.removeprefix("./") for path in paths)
