"""Cloud-init seeds in a real guest: the reference kernel mounts both kinds with the modules
`filesystem_drivers` names, and sees the files under the names cloud-init reads."""

from __future__ import annotations

import asyncio
import hashlib
import textwrap
from pathlib import Path, PurePosixPath

import pytest

from pluginspec import CloudInit, GuestNetwork
from support.guest import busybox_initramfs, load_modules_script, read_log
from volantd.boot.contract import filesystem_drivers
from volantd.boot.initrd import assemble_initrd
from volantd.cloudinit import build_seed, seed_documents
from volantd.hypervisors import DiskSpec, LaunchSpec, NetworkSpec, QemuDriver, VMState

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 120
SEED_DRIVERS = (*filesystem_drivers("iso9660"), *filesystem_drivers("vfat"))


def test_the_guest_mounts_iso9660_and_vfat_seeds_and_reads_the_documents(
    qemu_driver: QemuDriver, reference_kernel, run_dir: Path
) -> None:
    shipped = {PurePosixPath(path).name.removesuffix(".ko") for path in reference_kernel.modules}
    lacking = [
        name
        for name in SEED_DRIVERS
        if name not in shipped and name not in reference_kernel.builtin_modules
    ]
    assert not lacking, f"the kernel entry lacks {lacking}: run `volantd kernels fetch`"
    documents = seed_documents(
        CloudInit(), vm_id="9", hostname="seeded",
        network=GuestNetwork(mode="dhcp", mac="52:54:00:12:34:56"),
    )  # fmt: skip
    iso = build_seed(run_dir / "seed.iso", documents, "iso9660")
    fat = build_seed(run_dir / "seed.vfat", documents, "vfat")
    drivers = (*qemu_driver.guest_drivers(network=False, disks=2), *SEED_DRIVERS)
    body = textwrap.dedent("""\
        mkdir -p /iso /fat
        mount -t iso9660 -o ro /dev/vda /iso && echo "volant-test: iso mounted"
        mount -t vfat -o ro /dev/vdb /fat && echo "volant-test: vfat mounted"
        for seed in iso fat; do
            for file in user-data meta-data network-config; do
                echo "volant-test: $seed $file $(md5sum < /$seed/$file | cut -d' ' -f1)"
            done
        done
        poweroff -f
    """)
    plugin = busybox_initramfs(
        run_dir / "plugin.cpio.gz",
        load_modules_script(reference_kernel.modules_for(drivers)) + body,
    )
    parts = [plugin] + ([reference_kernel.modules_cpio] if reference_kernel.modules_cpio else [])
    spec = LaunchSpec(
        name="seeds", run_dir=run_dir, kernel=reference_kernel.image,
        initrd=assemble_initrd(run_dir / "initrd", parts), cmdline="console=ttyS0 panic=-1 quiet",
        memory_mb=256, network=NetworkSpec(),
        disks=(DiskSpec(iso.path, readonly=True, name="iso"),
               DiskSpec(fat.path, readonly=True, name="vfat")),
    )  # fmt: skip

    async def boot() -> VMState:
        vm = await qemu_driver.start(spec)
        qemu_driver.detach(vm)
        for _ in range(BOOT_TIMEOUT * 10):
            status = await qemu_driver.status(vm)
            if status.state in (VMState.STOPPED, VMState.CRASHED):
                return status.state
            await asyncio.sleep(0.1)
        await qemu_driver.stop(vm, timeout=1)
        raise AssertionError(f"guest did not power off:\n{read_log(run_dir / 'serial.log')}")

    assert asyncio.run(boot()) is VMState.STOPPED
    log = read_log(run_dir / "serial.log")
    assert "FAILED to load" not in log, log
    assert "volant-test: iso mounted" in log and "volant-test: vfat mounted" in log, log
    for seed in ("iso", "fat"):
        for name, text in (
            ("user-data", documents.user_data),
            ("meta-data", documents.meta_data),
            ("network-config", documents.network_config or ""),
        ):
            digest = hashlib.md5(text.encode()).hexdigest()
            assert f"volant-test: {seed} {name} {digest}" in log, log
