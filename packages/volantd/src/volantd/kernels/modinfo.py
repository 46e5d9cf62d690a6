"""Reading kernel module files: decompression and the ELF `.modinfo` section."""

from __future__ import annotations

import gzip
import io
import lzma
from dataclasses import dataclass
from pathlib import PurePosixPath

import zstandard
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from volantd.kernels.errors import ModuleInfoError

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


@dataclass(frozen=True)
class ModInfo:
    """What a module's `.modinfo` section says about it (names normalised, see below)."""

    name: str | None
    depends: tuple[str, ...] = ()
    softdep_pre: tuple[str, ...] = ()
    softdep_post: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    vermagic: str | None = None

    @property
    def kernel_release(self) -> str | None:
        """The `uname -r` the module was built for (first word of its vermagic)."""
        return self.vermagic.split()[0] if self.vermagic else None


def normalise_module_name(name: str) -> str:
    """The kernel treats `-` and `_` in module names alike; volant keys modules with `_`."""
    return name.replace("-", "_")


def is_module_path(path: str) -> bool:
    return path.endswith(MODULE_SUFFIXES)


def module_name_from_path(path: str) -> str:
    """`kernel/drivers/char/hw_random/virtio-rng.ko.xz` -> `virtio_rng`."""
    filename = PurePosixPath(path).name
    for suffix in MODULE_SUFFIXES:
        if filename.endswith(suffix):
            return normalise_module_name(filename.removesuffix(suffix))
    raise ModuleInfoError(f"{path} is not a kernel module file (expected one of {MODULE_SUFFIXES})")


def uncompressed_module_path(path: str) -> str:
    """`foo.ko.zst` -> `foo.ko`: modules are stored uncompressed in the modules cpio."""
    for suffix in MODULE_SUFFIXES[1:]:
        if path.endswith(suffix):
            return path.removesuffix(suffix) + ".ko"
    return path


def decompress_module(data: bytes, path: str) -> bytes:
    """The plain ELF object of a `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz` file's content."""
    try:
        if path.endswith(".ko.xz"):
            return lzma.decompress(data)
        if path.endswith(".ko.zst"):
            # Streaming API: kmod-compressed frames do not always record their content size.
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
                return reader.read()
        if path.endswith(".ko.gz"):
            return gzip.decompress(data)
    except (lzma.LZMAError, zstandard.ZstdError, OSError, EOFError) as error:
        raise ModuleInfoError(f"cannot decompress module {path}: {error}") from error
    return data


def modinfo_fields(section: bytes) -> list[tuple[str, str]]:
    """The `key=value` strings of a raw `.modinfo` section, in order (keys may repeat)."""
    fields: list[tuple[str, str]] = []
    for raw in section.split(b"\0"):
        key, sep, value = raw.decode("utf-8", "replace").partition("=")
        if sep and key:
            fields.append((key, value))
    return fields


def parse_softdep(value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`"pre: a b post: c"` -> (("a", "b"), ("c",)); names are kept as written (may be aliases)."""
    pre: list[str] = []
    post: list[str] = []
    current: list[str] | None = None
    for word in value.split():
        if word == "pre:":
            current = pre
        elif word == "post:":
            current = post
        elif current is not None:
            current.append(word)
    return tuple(pre), tuple(post)


def modinfo_from_section(section: bytes) -> ModInfo:
    """Interpret a raw `.modinfo` section (see `modinfo_fields`)."""
    name: str | None = None
    depends: list[str] = []
    pre: list[str] = []
    post: list[str] = []
    aliases: list[str] = []
    vermagic: str | None = None
    for key, value in modinfo_fields(section):
        if key == "name":
            name = normalise_module_name(value)
        elif key == "depends":
            depends.extend(normalise_module_name(d.strip()) for d in value.split(",") if d.strip())
        elif key == "softdep":
            more_pre, more_post = parse_softdep(value)
            pre.extend(more_pre)
            post.extend(more_post)
        elif key == "alias":
            aliases.append(value)
        elif key == "vermagic":
            vermagic = value
    return ModInfo(
        name=name,
        depends=tuple(depends),
        softdep_pre=tuple(pre),
        softdep_post=tuple(post),
        aliases=tuple(aliases),
        vermagic=vermagic,
    )


def parse_modinfo(elf_object: bytes, origin: str) -> ModInfo:
    """The `.modinfo` of an uncompressed module; `origin` names the file in error messages."""
    try:
        section = ELFFile(io.BytesIO(elf_object)).get_section_by_name(".modinfo")
    except ELFError as error:
        raise ModuleInfoError(f"{origin} is not an ELF object: {error}") from error
    if section is None:
        raise ModuleInfoError(f"{origin} has no .modinfo section, so it is not a kernel module")
    return modinfo_from_section(section.data())
