"""Builders of real test inputs: kernel modules compiled with gcc, bzImage headers, trees."""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import zstandard

TEST_RELEASE = "6.9.0-volant-test"

CompileModule = Callable[..., bytes]
MakeTree = Callable[..., Path]


def c_string_literal(fields: Sequence[str]) -> str:
    """A C literal holding NUL-separated fields; one literal per field so that a field
    starting with a digit is not read as part of an octal escape."""
    return " ".join(
        '"' + field.replace("\\", "\\\\").replace('"', '\\"') + '\\0"' for field in fields
    )


def _bzimage(version_string: str | None, *, protocol: int = 0x020F, size: int = 0x2000) -> bytes:
    """A synthetic bzImage: the x86 real-mode header fields volant reads, and padding."""
    image = bytearray(size)
    image[0x1FE:0x200] = b"\x55\xaa"
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, protocol)
    if version_string is not None:
        pointer = 0x400
        encoded = version_string.encode() + b"\0"
        image[0x200 + pointer : 0x200 + pointer + len(encoded)] = encoded
        struct.pack_into("<H", image, 0x20E, pointer)
    return bytes(image)


@pytest.fixture(scope="session")
def compile_module(tmp_path_factory: pytest.TempPathFactory) -> CompileModule:
    """Compile a relocatable ELF object whose `.modinfo` holds the given `key=value` fields."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: needed to build real ELF test modules")
    workdir = tmp_path_factory.mktemp("modules")
    cache: dict[tuple[str, ...], bytes] = {}

    def compile_(*fields: str) -> bytes:
        if fields not in cache:
            source = workdir / f"m{len(cache)}.c"
            source.write_text(
                '__attribute__((section(".modinfo"), used, aligned(1)))\n'
                f"static const char modinfo[] = {c_string_literal(fields)};\n"
                "int module_text(void) { return 0; }\n"
            )
            subprocess.run(
                ["gcc", "-c", "-o", str(source.with_suffix(".o")), str(source)], check=True
            )
            cache[fields] = source.with_suffix(".o").read_bytes()
        return cache[fields]

    return compile_


def module_fields(name: str, depends: Sequence[str] = (), *extra: str) -> tuple[str, ...]:
    return (
        f"name={name}",
        f"depends={','.join(depends)}",
        f"vermagic={TEST_RELEASE} SMP mod_unload modversions ",
        *extra,
    )


# A miniature of a distribution kernel: some guest drivers are modules (some compressed,
# some with dependencies and soft dependencies), the rest are built in.
FAKE_MODULES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # path: (depends, extra modinfo fields)
    "kernel/drivers/virtio/virtio.ko": ((), ()),
    "kernel/drivers/virtio/virtio_ring.ko": ((), ()),
    "kernel/drivers/virtio/virtio_mmio.ko": (("virtio", "virtio_ring"), ()),
    "kernel/drivers/block/virtio_blk.ko.xz": (("virtio", "virtio_ring"), ()),
    "kernel/drivers/net/virtio_net.ko": (("virtio", "virtio_ring", "net_failover"), ()),
    "kernel/drivers/net/net_failover.ko": (("failover",), ()),
    "kernel/net/core/failover.ko": ((), ()),
    "kernel/drivers/char/hw_random/virtio-rng.ko.zst": (("virtio", "virtio_ring"), ()),
    "kernel/net/vmw_vsock/vsock.ko": ((), ()),
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko": (("vsock", "virtio"), ()),
    "kernel/fs/overlayfs/overlay.ko": ((), ("softdep=pre: crc32c", "alias=fs-overlay")),
    "kernel/arch/x86/crypto/crc32c-intel.ko": ((), ("alias=crc32c", "alias=crypto-crc32c")),
    "kernel/drivers/unrelated/unrelated.ko": (("nothing_like_this",), ()),
}
FAKE_BUILTIN = ("virtio_pci", "virtio_console", "squashfs", "ext4", "jbd2", "mbcache")


def compress(data: bytes, path: str) -> bytes:
    if path.endswith(".xz"):
        return lzma.compress(data)
    if path.endswith(".zst"):
        return zstandard.ZstdCompressor().compress(data)
    return data


@pytest.fixture
def make_module_tree(tmp_path: Path, compile_module: CompileModule) -> MakeTree:
    """Write a `lib/modules/<release>` tree of real ELF modules; return its directory."""

    def make(
        modules: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = FAKE_MODULES,
        builtin: Sequence[str] = FAKE_BUILTIN,
        release: str = TEST_RELEASE,
        root: Path | None = None,
    ) -> Path:
        tree = (root or tmp_path / "rootfs") / "lib" / "modules" / release
        for path, (depends, extra) in modules.items():
            name = Path(path).name.split(".ko")[0].replace("-", "_")
            file = tree / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(compress(compile_module(*module_fields(name, depends, *extra)), path))
        (tree / "modules.builtin").write_text(
            "".join(f"kernel/builtin/{name}.ko\n" for name in builtin)
        )
        return tree

    return make


@pytest.fixture
def make_bzimage(tmp_path: Path) -> Callable[..., Path]:
    def make(release: str = TEST_RELEASE, filename: str = "bzImage") -> Path:
        path = tmp_path / filename
        path.write_bytes(_bzimage(f"{release} (volant@test) #1 SMP PREEMPT_DYNAMIC"))
        return path

    return make


@pytest.fixture
def build_bzimage() -> Callable[..., bytes]:
    """`build_bzimage(version_string, protocol=..., size=...)`: synthetic bzImage bytes."""
    return _bzimage
