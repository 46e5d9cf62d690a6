"""select_modules: the guest's wanted drivers plus their dependencies, built-ins skipped."""

from __future__ import annotations

import pytest

from volantd.kernels import DependencyCycleError, ModuleResolutionError, select_modules
from volantd.kernels.moduletree import KernelModule, ModuleIndex, build_index
from volantd.kernels.selection import GUEST_MODULES, WantedModule


def module(name: str, *depends: str, pre: tuple[str, ...] = ()) -> KernelModule:
    return KernelModule(name=name, path=f"kernel/{name}.ko", depends=depends, softdep_pre=pre)


def index(
    *modules: KernelModule,
    builtin: str = "",
    aliases: tuple[tuple[str, str], ...] = (),
    builtin_modinfo: bytes | None = None,
) -> ModuleIndex:
    return build_index(
        "test-tree",
        modules,
        aliases=aliases,
        builtin_list="".join(f"kernel/{name}.ko\n" for name in builtin.split()),
        builtin_modinfo=builtin_modinfo,
    )


def want(*names: str) -> list[WantedModule]:
    return [WantedModule(name, purpose=f"testing {name}") for name in names]


def names(selection_modules: tuple[KernelModule, ...]) -> list[str]:
    return [m.name for m in selection_modules]


def test_wanted_modules_come_with_their_dependencies_in_load_order() -> None:
    tree = index(
        module("virtio"),
        module("virtio_ring"),
        module("virtio_net", "virtio", "virtio_ring", "net_failover"),
        module("net_failover", "failover"),
        module("failover"),
        module("unrelated"),
    )
    selection = select_modules(tree, want("virtio_net"))
    assert names(selection.modules) == [
        "failover",
        "net_failover",
        "virtio",
        "virtio_ring",
        "virtio_net",
    ]


def test_built_in_modules_are_skipped_and_reported() -> None:
    tree = index(module("virtio_mmio", "virtio", "virtio_ring"), builtin="virtio virtio_ring ext4")
    selection = select_modules(tree, want("virtio_mmio", "ext4"))
    assert names(selection.modules) == ["virtio_mmio"]
    assert selection.builtin == ("ext4", "virtio", "virtio_ring")


def test_a_missing_wanted_module_is_an_error_naming_it_and_its_purpose() -> None:
    with pytest.raises(ModuleResolutionError, match=r"neither a squashfs .*testing squashfs"):
        select_modules(index(module("virtio")), want("virtio", "squashfs"))


def test_a_missing_module_explains_when_modules_builtin_is_absent() -> None:
    tree = build_index("tree-without-builtin", [module("virtio")])
    with pytest.raises(ModuleResolutionError, match=r"has no modules.builtin"):
        select_modules(tree, want("ext4"))


def test_a_missing_optional_module_is_only_reported() -> None:
    wanted = [WantedModule("virtio_rng", "entropy", optional=True), *want("virtio")]
    selection = select_modules(index(module("virtio")), wanted)
    assert names(selection.modules) == ["virtio"]
    assert selection.absent_optional == ("virtio_rng",)


def test_a_missing_hard_dependency_names_both_modules() -> None:
    tree = index(module("vsock_transport", "vsock"))
    with pytest.raises(ModuleResolutionError, match=r"vsock_transport depends on vsock"):
        select_modules(tree, want("vsock_transport"))


def test_wanted_names_may_use_dashes() -> None:
    tree = index(module("virtio_rng"))
    assert names(select_modules(tree, want("virtio-rng")).modules) == ["virtio_rng"]


def test_pre_softdeps_are_loaded_before_the_module() -> None:
    tree = index(
        module("ext4", "jbd2", pre=("crc32c_generic",)), module("jbd2"), module("crc32c_generic")
    )
    order = names(select_modules(tree, want("ext4")).modules)
    assert order.index("crc32c_generic") < order.index("ext4")
    assert order.index("jbd2") < order.index("ext4")


def test_pre_softdeps_naming_an_alias_load_its_providers() -> None:
    tree = index(
        module("libcrc32c", pre=("crc32c",)),
        module("crc32c_intel"),
        aliases=(("crc32c", "crc32c_intel"), ("crypto-crc32c", "crc32c_intel")),
    )
    assert names(select_modules(tree, want("libcrc32c")).modules) == ["crc32c_intel", "libcrc32c"]


def test_pre_softdeps_provided_by_a_built_in_are_already_satisfied() -> None:
    tree = index(
        module("libcrc32c", pre=("crc32c",)),
        module("crc32c_intel"),
        builtin="crc32c_generic",
        aliases=(("crc32c", "crc32c_intel"),),
        builtin_modinfo=b"crc32c_generic.alias=crc32c\0crc32c_generic.license=GPL\0",
    )
    assert names(select_modules(tree, want("libcrc32c")).modules) == ["libcrc32c"]


def test_unresolvable_pre_softdeps_are_skipped_like_modprobe_does() -> None:
    tree = index(module("overlay", pre=("no_such_thing",)))
    assert names(select_modules(tree, want("overlay")).modules) == ["overlay"]


def test_dependency_cycles_are_reported() -> None:
    tree = index(module("a", "b"), module("b", "a"))
    with pytest.raises(DependencyCycleError, match=r"a -> b -> a"):
        select_modules(tree, want("a"))


def test_the_same_input_always_gives_the_same_selection() -> None:
    tree = index(module("c", "a", "b"), module("b", "a"), module("a"), module("d", "a"))
    first = select_modules(tree, want("d", "c"))
    assert select_modules(tree, want("d", "c")) == first
    assert names(first.modules) == ["a", "b", "c", "d"]


def test_a_kernel_without_the_seed_filesystems_still_gives_every_other_guest_module() -> None:
    required = [wanted.name for wanted in GUEST_MODULES if not wanted.optional]
    tree = index(*(module(name) for name in required if name != "ext4"), builtin="ext4")
    selection = select_modules(tree)
    assert selection.absent_optional == (
        "virtio_rng", "isofs", "vfat", "nls_cp437", "nls_ascii",
    )  # fmt: skip
    with_seeds = index(
        *tree.modules.values(), module("cdrom"), module("isofs", "cdrom"), module("fat"),
        module("vfat", "fat"), module("nls_cp437"), module("nls_ascii"), builtin="ext4",
    )  # fmt: skip
    chosen = names(select_modules(with_seeds).modules)
    assert {"cdrom", "isofs", "fat", "vfat", "nls_cp437", "nls_ascii"} <= set(chosen)
    assert chosen.index("fat") < chosen.index("vfat")
