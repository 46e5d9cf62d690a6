"""Building plugins with the real fledge CLI and booting them as volantd will."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pluginspec import PluginManifest, load_manifest
from support.guest import free_port
from volantd.boot.contract import (
    guest_contract,
    guest_network,
    kernel_cmdline,
    mac_for,
    prepare_initrd,
)
from volantd.hypervisors import LaunchSpec, NetworkSpec, PortForward, QemuDriver
from volantd.kernels import KernelEntry

REPO = Path(__file__).resolve().parents[2]
AGENT_PORT = 8080


def fledge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `fledge` command."""
    command = [str(Path(sys.executable).parent / "fledge"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)


@dataclass(frozen=True)
class BuiltPlugin:
    artifact: Path
    manifest: PluginManifest


def build_plugin(config: Path, output: Path) -> BuiltPlugin:
    """`fledge build -c CONFIG -o OUTPUT`, returning the artifact and its manifest."""
    result = fledge("build", "-c", str(config), "-o", str(output))
    assert result.returncode == 0, result.stdout + result.stderr
    manifests = sorted(output.glob("*.json"))
    assert len(manifests) == 1, f"expected one manifest in {output}: {manifests}"
    manifest = load_manifest(manifests[0])
    assert manifest.initramfs is not None
    return BuiltPlugin(Path(manifest.initramfs.url), manifest)


@dataclass(frozen=True)
class PluginVM:
    spec: LaunchSpec
    agent_port: int
    ports: dict[int, int]  # guest port -> host port

    def agent_url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.agent_port}{path}"


def plugin_vm(
    run_dir: Path, kernel: KernelEntry, plugin: BuiltPlugin, guest_ports: tuple[int, ...] = ()
) -> PluginVM:
    """The launch spec of a VM running `plugin`, its agent and `guest_ports` forwarded."""
    agent_port = free_port()
    ports = {port: free_port() for port in guest_ports}
    forwards = (
        PortForward(agent_port, AGENT_PORT),
        *(PortForward(host, guest) for guest, host in ports.items()),
    )
    vm_id = run_dir.name
    contract = guest_contract(
        name="plugin-test", vm_id=vm_id, manifest=plugin.manifest, kernel=kernel,
        network=guest_network("user", mac_for(vm_id)),
        drivers=QemuDriver().guest_drivers(network=True),
    )  # fmt: skip
    initrd = prepare_initrd(run_dir, plugin.artifact, kernel, contract)
    (run_dir / "vm.json").write_text(json.dumps(json.loads(contract.to_json()), indent=2))
    spec = LaunchSpec(
        name="plugin-test",
        run_dir=run_dir,
        kernel=kernel.image,
        initrd=initrd,
        cmdline=kernel_cmdline(),
        memory_mb=plugin.manifest.resources.memory_mb,
        cpus=plugin.manifest.resources.cpu_cores,
        network=NetworkSpec(mac=contract.network.mac or "", forwards=forwards),
    )
    return PluginVM(spec, agent_port, ports)
