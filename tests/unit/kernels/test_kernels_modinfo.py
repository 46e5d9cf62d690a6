"""Reading `.modinfo` from real ELF objects, compressed or not."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from volantd.kernels import ModuleInfoError
from volantd.kernels.modinfo import (
    decompress_module,
    module_name_from_path,
    parse_modinfo,
    parse_softdep,
    uncompressed_module_path,
)

CompileModule = Callable[..., bytes]


def test_depends_and_name_are_read_from_the_elf_section(compile_module: CompileModule) -> None:
    elf = compile_module("name=foo", "depends=bar,baz")
    info = parse_modinfo(elf, "foo.ko")
    assert info.name == "foo"
    assert info.depends == ("bar", "baz")
    assert info.softdep_pre == ()


def test_all_fields_volant_uses_are_parsed(compile_module: CompileModule) -> None:
    elf = compile_module(
        "license=GPL",
        "alias=crypto-crc32c",
        "alias=crc32c",
        "softdep=pre: crc32c jbd-2 post: extra",
        "depends=",
        "name=libcrc32c",
        "vermagic=6.1.0-50-cloud-amd64 SMP preempt mod_unload modversions ",
    )
    info = parse_modinfo(elf, "libcrc32c.ko")
    assert info.name == "libcrc32c"
    assert info.depends == ()
    assert info.softdep_pre == ("crc32c", "jbd-2")
    assert info.softdep_post == ("extra",)
    assert info.aliases == ("crypto-crc32c", "crc32c")
    assert info.kernel_release == "6.1.0-50-cloud-amd64"


def test_module_names_are_normalised_to_underscores(compile_module: CompileModule) -> None:
    info = parse_modinfo(compile_module("name=virtio-rng", "depends=virtio-ring,virtio"), "x")
    assert info.name == "virtio_rng"
    assert info.depends == ("virtio_ring", "virtio")


def test_fields_starting_with_digits_survive(compile_module: CompileModule) -> None:
    info = parse_modinfo(compile_module("name=m", "vermagic=6.1.0 SMP "), "m.ko")
    assert info.vermagic == "6.1.0 SMP "


def test_several_softdep_entries_accumulate(compile_module: CompileModule) -> None:
    info = parse_modinfo(compile_module("softdep=pre: a", "softdep=pre: b post: c"), "m.ko")
    assert info.softdep_pre == ("a", "b")
    assert info.name is None


def test_an_object_without_modinfo_is_not_a_module(
    compile_module: CompileModule, tmp_path: Path
) -> None:
    if shutil.which("objcopy") is None:
        pytest.skip("objcopy (binutils) is not installed")
    stripped = tmp_path / "x.o"
    stripped.write_bytes(compile_module("name=x"))
    subprocess.run(["objcopy", "--remove-section=.modinfo", str(stripped)], check=True)
    with pytest.raises(ModuleInfoError, match=r"x\.ko has no \.modinfo section"):
        parse_modinfo(stripped.read_bytes(), "x.ko")


def test_a_non_elf_file_is_rejected_with_its_name() -> None:
    with pytest.raises(ModuleInfoError, match=r"broken.ko is not an ELF object"):
        parse_modinfo(b"definitely not ELF", "broken.ko")


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".ko", lambda data: data),
        (".ko.xz", lzma.compress),
        (".ko.zst", lambda data: zstandard.ZstdCompressor().compress(data)),
        (".ko.gz", gzip.compress),
    ],
)
def test_compressed_modules_are_decompressed(
    compile_module: CompileModule, suffix: str, compress: Callable[[bytes], bytes]
) -> None:
    elf = compile_module("name=foo", "depends=bar")
    assert decompress_module(compress(elf), f"foo{suffix}") == elf


def test_zstd_frames_without_content_size_are_decompressed(compile_module: CompileModule) -> None:
    elf = compile_module("name=foo")
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    assert decompress_module(compressor.compress(elf), "foo.ko.zst") == elf


def test_corrupt_compressed_module_names_the_file() -> None:
    with pytest.raises(ModuleInfoError, match=r"cannot decompress module foo.ko.xz"):
        decompress_module(b"not xz", "foo.ko.xz")


def test_names_and_stored_paths_come_from_the_file_name() -> None:
    assert module_name_from_path("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"
    assert uncompressed_module_path("kernel/fs/overlayfs/overlay.ko.zst") == (
        "kernel/fs/overlayfs/overlay.ko"
    )
    assert uncompressed_module_path("kernel/fs/overlayfs/overlay.ko") == (
        "kernel/fs/overlayfs/overlay.ko"
    )
    with pytest.raises(ModuleInfoError):
        module_name_from_path("kernel/fs/readme.txt")


def test_softdep_text_without_sections_yields_nothing() -> None:
    assert parse_softdep("a b c") == ((), ())
