"""Boot to a healthy workload: a root-disk plugin against the initramfs plugin of the same workload.

Both run busybox httpd serving examples/busybox-httpd/www on port 80 with the same health check:
  (a) the example as an initramfs plugin (built with fledge);
  (b) the same busybox and page on an ext4 root disk, booted with volantd's boot initramfs,
      kestrel switching root into the disk (per-VM qcow2 overlay).
One volantd (under uvicorn, spoken to over HTTP) runs both; each boot is timed from
`POST /api/v1/vms?wait=healthy` to its answer. One warm-up boot of each is left out (the first
rootfs VM builds the boot initramfs). Runs alternate; prints medians and the ratio b/a, plus
the boot waterfall of the last boot of each.

    uv run python benchmarks/rootfs_boot.py [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.plugins import REPO, build_plugin
from support.root_disks import busybox_tree, make_ext4, rootfs_manifest
from support.volantd import Volantd, running_volantd
from volantd.kernels import KernelStore

EXAMPLE = REPO / "examples/busybox-httpd"
WORKLOAD = {
    "type": "http",
    "entrypoint": ["/bin/httpd"],
    "args": ["-f", "-v", "-p", "80", "-h", "/var/www"],
    "base_url": "http://127.0.0.1:80",
    "restart": {"policy": "always"},
}


def root_disk(folder: Path) -> Path:
    tree = busybox_tree(folder / "tree")
    shutil.copytree(EXAMPLE / "www", tree / "var/www")
    return make_ext4(tree, folder / "busybox-httpd.ext4")


def boot(daemon: Volantd, plugin: str, name: str) -> tuple[float, dict]:
    """Seconds from the create request to a healthy workload, and the VM's boot record."""
    with daemon.client(timeout=300) as client:
        started = time.monotonic()
        created = client.post("/api/v1/vms?wait=healthy", json={"name": name, "plugin": plugin})
        elapsed = time.monotonic() - started
        if created.status_code != 201:
            sys.exit(f"{plugin}: {created.status_code} {created.text}")
        client.delete(f"/api/v1/vms/{name}")
    return elapsed, created.json()["boot"]


def waterfall(record: dict) -> str:
    """The boot phases with their times after the create request (host clock)."""
    steps = {step: info.get("host_ms") for step, info in (record.get("steps") or {}).items()}
    timed = sorted((ms, step) for step, ms in steps.items() if ms is not None)
    return ", ".join(f"{step} {ms} ms" for ms, step in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    kernel = KernelStore.from_environment().get()
    with tempfile.TemporaryDirectory(prefix="volant-bench-rootfs-") as tmp:
        root = Path(tmp)
        initramfs = build_plugin(EXAMPLE / "fledge.toml", root / "initramfs")
        manifest_file = next((root / "initramfs").glob("*.json"))
        disk = rootfs_manifest(
            "busybox-httpd-disk", root_disk(root / "disk"), workload=WORKLOAD,
            expose=[{"name": "http", "port": 80}],
            health_check={"endpoint": "/", "timeout_ms": 30000},
        )  # fmt: skip
        env = {"VOLANT_KERNELS_DIR": str(kernel.directory.parent)}
        with running_volantd(root / "home", env=env) as daemon, daemon.client() as client:
            for body in ({"source": str(manifest_file)}, disk):
                installed = client.post("/api/v1/plugins", json=body)
                if installed.status_code != 201:
                    sys.exit(f"install failed: {installed.text}")
            plugins = {"initramfs": initramfs.manifest.name, "rootfs": disk["name"]}
            print(f"kernel {kernel.name}; initramfs plugin vs ext4 root disk, busybox httpd")
            for kind, plugin in plugins.items():
                seconds, _ = boot(daemon, plugin, f"warm-{kind}")
                print(f"  warm-up {kind}: {seconds:.2f} s")
            times: dict[str, list[float]] = {kind: [] for kind in plugins}
            last: dict[str, dict] = {}
            for run in range(options.runs):
                order = list(plugins) if run % 2 == 0 else list(reversed(plugins))
                for kind in order:
                    seconds, last[kind] = boot(daemon, plugins[kind], f"{kind}-{run}")
                    times[kind].append(seconds)
                print(
                    f"  run {run + 1}: initramfs {times['initramfs'][-1]:.2f} s, "
                    f"rootfs {times['rootfs'][-1]:.2f} s"
                )
        a, b = statistics.median(times["initramfs"]), statistics.median(times["rootfs"])
        print(f"median: initramfs {a:.2f} s, rootfs {b:.2f} s, ratio rootfs/initramfs {b / a:.2f}")
        for kind in plugins:
            print(f"  {kind} waterfall: {waterfall(last[kind])}")


if __name__ == "__main__":
    main()
