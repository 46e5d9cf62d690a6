"""volantd's API against the driver it wraps, in one run.

1. create → healthy: N boots of the example plugin through `POST /api/v1/vms?wait=healthy`
   (then deleted), interleaved with N boots of the same plugin straight through
   `QemuDriver` until kestrel has printed `workload_healthy` and `agent_ready` (the
   baseline: what `wait=healthy` waits for). Prints both medians
   and the ratio.
2. `GET /api/v1/vms` with 1,000 VM records (recorded with `start=false`): p50/p99 latency of
   the whole list and of a 50-item page.
3. volantd's resident memory per running VM: RSS before and with K VMs running.

    uv run python benchmarks/api.py [--runs 5] [--records 1000] [--running 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from boot import HEALTHY_MARKER

from support.guest import console_line
from support.plugins import REPO, build_plugin, plugin_vm
from support.volantd import running_volantd
from volantd.hypervisors import LaunchSpec, QemuDriver
from volantd.kernels import KernelStore

AGENT_READY_MARKER = b'"event":"agent_ready"'


async def time_to_ready(driver: QemuDriver, spec: LaunchSpec) -> float:
    """Seconds from the driver's start until kestrel printed both `workload_healthy` and
    `agent_ready`: what `wait=healthy` waits for."""
    log = spec.run_dir / "serial.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    vm = await driver.start(spec)
    try:
        for marker in (HEALTHY_MARKER, AGENT_READY_MARKER):
            await console_line(log, marker, started)
        return time.monotonic() - started
    finally:
        await driver.stop(vm, timeout=5)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--running", type=int, default=3)
    options = parser.parse_args()

    kernel = KernelStore.from_environment().get()
    with tempfile.TemporaryDirectory(prefix="volant-api-bench-") as tmp:
        root = Path(tmp)
        plugin = build_plugin(REPO / "examples/busybox-httpd/fledge.toml", root / "out")
        manifest_file = next((root / "out").glob("*.json"))
        driver = QemuDriver(cache_dir=root / "cache")
        print(f"accel: {driver.choose_accel(kernel.image).reason}")
        direct_dir = root / "direct"
        direct_dir.mkdir()
        direct = plugin_vm(direct_dir, kernel, plugin, guest_ports=(80,)).spec
        env = {"VOLANT_KERNELS_DIR": str(kernel.directory.parent)}
        with running_volantd(root / "home", env=env) as daemon, daemon.client(timeout=300) as api:
            api.post("/api/v1/plugins", json={"source": str(manifest_file)}).raise_for_status()
            warm = api.post(
                "/api/v1/vms?wait=healthy", json={"name": "warm", "plugin": "busybox-httpd"}
            )
            warm.raise_for_status()  # pays volantd's one-time KVM probe
            api.delete("/api/v1/vms/warm").raise_for_status()

            baseline, through_api = [], []
            for run in range(options.runs):
                baseline.append(asyncio.run(time_to_ready(driver, direct)))
                started = time.monotonic()
                created = api.post(
                    "/api/v1/vms?wait=healthy",
                    json={"name": f"bench-{run}", "plugin": "busybox-httpd"},
                )
                through_api.append(time.monotonic() - started)
                created.raise_for_status()
                api.delete(f"/api/v1/vms/bench-{run}").raise_for_status()
            a, b = statistics.median(baseline), statistics.median(through_api)
            print(f"create→healthy, driver only (baseline)  median {a:.3f} s  "
                  f"[{', '.join(f'{x:.3f}' for x in baseline)}]")  # fmt: skip
            print(f"create→healthy, through the API         median {b:.3f} s  "
                  f"[{', '.join(f'{x:.3f}' for x in through_api)}]")  # fmt: skip
            print(f"ratio API/driver: {b / a:.2f}")

            process = psutil.Process(daemon.process.pid)
            rss_idle = process.memory_info().rss
            for index in range(options.running):
                api.post(
                    "/api/v1/vms?wait=agent",
                    json={"name": f"mem-{index}", "plugin": "busybox-httpd"},
                ).raise_for_status()
            rss_running = process.memory_info().rss
            per_vm = (rss_running - rss_idle) / max(1, options.running)
            idle_mib, running_mib = rss_idle / 2**20, rss_running / 2**20
            print(f"volantd RSS: {idle_mib:.1f} MiB idle, {running_mib:.1f} MiB with "
                  f"{options.running} running VMs: {per_vm / 2**10:.0f} KiB per VM")  # fmt: skip
            for index in range(options.running):
                api.delete(f"/api/v1/vms/mem-{index}").raise_for_status()

            started = time.monotonic()
            for index in range(options.records):
                api.post(
                    "/api/v1/vms?start=false",
                    json={"name": f"rec-{index}", "plugin": "busybox-httpd"},
                ).raise_for_status()
            print(f"recorded {options.records} VMs in {time.monotonic() - started:.1f} s")
            for label, params in (("all", {}), ("page of 50", {"limit": 50, "offset": 500})):
                samples = []
                for _ in range(100):
                    started = time.monotonic()
                    reply = api.get("/api/v1/vms", params=params)
                    samples.append((time.monotonic() - started) * 1000)
                    reply.raise_for_status()
                p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
                print(f"GET /api/v1/vms ({label}, {options.records} records): "
                      f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip
            print(f"volantd RSS with {options.records} records: "
                  f"{process.memory_info().rss / 2**20:.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    except httpx.HTTPStatusError as error:
        sys.exit(f"error: {error.response.status_code} {error.response.text}")
