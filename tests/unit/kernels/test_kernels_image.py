"""Recognising bzImage and vmlinux files and reading their kernel release."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from volantd.kernels import ImageFormat, KernelImageError, inspect_kernel_image
from volantd.kernels.image import bzimage_version

BuildBzImage = Callable[..., bytes]
DEBIAN_BANNER = (
    "6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC "
    "Debian 6.1.176-1 (2026-07-02)"
)


def test_the_release_is_the_first_word_of_the_header_version_string(
    build_bzimage: BuildBzImage,
) -> None:
    assert bzimage_version(build_bzimage(DEBIAN_BANNER)) == "6.1.0-50-cloud-amd64"


def test_a_header_without_version_pointer_has_no_version(build_bzimage: BuildBzImage) -> None:
    assert bzimage_version(build_bzimage(None)) is None


def test_boot_protocols_before_2_00_have_no_version_pointer(build_bzimage: BuildBzImage) -> None:
    assert bzimage_version(build_bzimage(DEBIAN_BANNER, protocol=0x0105)) is None


def test_a_truncated_version_string_is_not_guessed(build_bzimage: BuildBzImage) -> None:
    image = build_bzimage(DEBIAN_BANNER)
    assert bzimage_version(image[: 0x600 + 5]) is None


def test_a_bzimage_file_is_recognised(build_bzimage: BuildBzImage, tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz"
    path.write_bytes(build_bzimage(DEBIAN_BANNER))
    image = inspect_kernel_image(path)
    assert image.format is ImageFormat.BZIMAGE
    assert image.version == "6.1.0-50-cloud-amd64"


def test_a_bzimage_without_version_is_a_clear_error(
    build_bzimage: BuildBzImage, tmp_path: Path
) -> None:
    path = tmp_path / "old-bzImage"
    path.write_bytes(build_bzimage(None))
    with pytest.raises(KernelImageError, match=rf"{path} is a bzImage but .* no kernel version"):
        inspect_kernel_image(path)


def test_a_vmlinux_is_recognised_by_its_elf_header_and_banner(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: needed to build an ELF test image")
    source = tmp_path / "banner.c"
    source.write_text(
        'const char linux_banner[] = "Linux version 6.9.0-custom (me@host) '
        '(gcc) #1 SMP\\n";\n'
        'const char fmt[] = "Linux version %s";\n'
        "int main(void) { return 0; }\n"
    )
    vmlinux = tmp_path / "vmlinux"
    subprocess.run(["gcc", "-o", str(vmlinux), str(source)], check=True)
    image = inspect_kernel_image(vmlinux)
    assert image.format is ImageFormat.VMLINUX
    assert image.version == "6.9.0-custom"


def test_an_elf_without_banner_is_not_a_vmlinux(tmp_path: Path) -> None:
    elf = shutil.which("true")
    assert elf is not None
    if b"Linux version " in Path(elf).read_bytes():
        pytest.skip("this system's `true` happens to carry a Linux banner")
    with pytest.raises(KernelImageError, match=r"without a 'Linux version' banner"):
        inspect_kernel_image(Path(elf))


def test_an_unrecognised_file_names_the_path_and_what_was_expected(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(KernelImageError) as caught:
        inspect_kernel_image(path)
    assert str(path) in str(caught.value)
    assert "bzImage" in str(caught.value) and "vmlinux" in str(caught.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KernelImageError, match=r"does not exist"):
        inspect_kernel_image(tmp_path / "nope")
