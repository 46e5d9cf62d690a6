"""`volar doctor` and `volar setup`: is this host ready for Volant, and make it so.

Registered on the root app by volar.cli (``app.command()(doctor)``, ``app.command()(setup)``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from volar.context import OutputOption, client, fail, usage_error
from volar.host.bridge import plan_bridge, plan_teardown
from volar.host.checks import inspect_host, volant_home
from volar.host.network import (
    DEFAULT_BRIDGE,
    DEFAULT_SUBNET,
    InvalidSetting,
    iptables_rules,
    network_facts,
    network_settings,
)
from volar.host.record import load_record, record_path
from volar.host.setup import DEFAULT_UNIT, plan_setup, setup_facts
from volar.host.steps import Step, StepKind, root_steps
from volar.output import Format, emit


def doctor(
    output: OutputOption = Format.TABLE,
    no_probe: Annotated[
        bool,
        typer.Option("--no-probe", help="never boot the KVM probe guest; report a cached verdict"),
    ] = False,
) -> None:
    """Check that this host can run Volant VMs (exit 1 when something required is missing).

    One row per check, OK / MISSING / WARN, with the reason and the fix: volantd, QEMU, the
    default guest kernel, /dev/kvm and the acceleration volantd will use (KVM only when a
    probe guest boots; TCG otherwise), fledge's static busybox, C compiler and static libc,
    apt, and whether volantd answers at --api. Only volantd, QEMU and the kernel are required.
    """
    report = inspect_host(client(timeout=5), probe=not no_probe)
    if output is Format.TABLE:
        width = max(len(check.name) for check in report.checks)
        for check in report.checks:
            typer.echo(f"{check.status.value:<8} {check.name:<{width}}  {check.detail}")
            if check.fix and check.status.value != "OK":
                typer.echo(f"{'':<8} {'':<{width}}  fix: {check.fix}")
        missing = [c.name for c in report.checks if c.required and c.status.value != "OK"]
        if missing:
            typer.echo(f"\nNot ready: {', '.join(missing)}. `volar setup --dry-run` shows the fix.")
        else:
            typer.echo("\nReady: everything required is in place.")
    else:
        emit(report.as_dict(), output)
    if not report.ready:
        raise typer.Exit(1)


def setup(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the commands it would run; change nothing")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before changing")] = False,
    systemd: Annotated[
        bool, typer.Option("--systemd", help="also install and start a systemd unit for volantd")
    ] = False,
    unit_file: Annotated[
        Path, typer.Option(help="where --systemd writes the unit", show_default=True)
    ] = DEFAULT_UNIT,
    bridge: Annotated[
        bool,
        typer.Option(
            "--bridge",
            help="also set up bridged networking: the bridge, its address, IPv4 forwarding and NAT",
        ),
    ] = False,
    bridge_only: Annotated[
        bool,
        typer.Option(
            "--bridge-only",
            help="only the bridged-networking steps, no packages, kernel or unit (what the "
            "volantd unit of --systemd --bridge runs at each start)",
        ),
    ] = False,
    bridge_name: Annotated[
        str | None,
        typer.Option(help=f"the bridge [env VOLANT_BRIDGE; default {DEFAULT_BRIDGE}]"),
    ] = None,
    subnet: Annotated[
        str | None,
        typer.Option(
            help=f"the bridge's IPv4 subnet [env VOLANT_SUBNET; default {DEFAULT_SUBNET}]"
        ),
    ] = None,
    host_ip: Annotated[
        str | None,
        typer.Option(
            help="the host's address on the bridge, the guests' gateway [env VOLANT_HOST_IP; "
            "default the subnet's first address]"
        ),
    ] = None,
    teardown: Annotated[
        bool,
        typer.Option(
            "--teardown",
            help="remove what `volar setup --bridge` made (recorded in "
            "$VOLANT_HOME/host-setup.json), and nothing else",
        ),
    ] = False,
) -> None:
    """Install what this host lacks (as root; --dry-run shows the commands).

    Missing apt packages (qemu-system-x86, busybox-static, gcc, libc6-dev, nftables,
    dnsmasq-base, dosfstools, mtools), the reference guest kernel (volantd kernels fetch) and,
    with --systemd, a volantd unit that is enabled and started when systemd runs. With
    --bridge, also the bridge of bridged VMs with its address, IPv4 forwarding, and NAT (nft
    table `ip volant`, or iptables rules without nft); --systemd --bridge makes the unit set
    them up again at each start. Safe to run again: what is in place is skipped. --teardown
    removes what --bridge made, as recorded, keeping what it found.
    """
    if teardown:
        if bridge or bridge_only or systemd:
            usage_error("--teardown undoes --bridge: it takes only --dry-run and --yes")
        _teardown(dry_run=dry_run, yes=yes, unit_file=unit_file)
        return
    if bridge_only and systemd:
        usage_error("--bridge-only sets up bridged networking only: use --bridge with --systemd")
    network = None
    if bridge or bridge_only:
        try:
            network = network_settings(bridge_name, subnet, host_ip)
        except InvalidSetting as error:
            usage_error(str(error))
    else:
        given = [
            flag
            for flag, value in (
                ("--bridge-name", bridge_name),
                ("--subnet", subnet),
                ("--host-ip", host_ip),
            )
            if value is not None
        ]
        if given:
            usage_error(f"{', '.join(given)} configure bridged networking: add --bridge")
    if bridge_only and network is not None:
        path = record_path(volant_home())
        facts = network_facts(iptables_rules(network))
        steps = plan_bridge(network, facts, load_record(path), path)
    else:
        report = inspect_host(None, probe=False)
        host = setup_facts(report, systemd=systemd, unit_path=unit_file, network=network)
        steps = plan_setup(report.checks, host)
    _carry_out(steps, dry_run=dry_run, yes=yes, command="volar setup")
    typer.echo("Setup complete.")


def _teardown(*, dry_run: bool, yes: bool, unit_file: Path) -> None:
    path = record_path(volant_home())
    record = load_record(path)
    if record is None:
        typer.echo(f"Nothing to tear down: volar setup made nothing here (no {path}).")
        return
    steps = plan_teardown(record, network_facts(record.iptables_rules), path)
    _carry_out(steps, dry_run=dry_run, yes=yes, command="volar setup --teardown")
    left = any(step.kind is StepKind.WRITE for step in steps)
    typer.echo(f"Teardown complete; what was left stays recorded in {path}." if left
               else "Teardown complete.")  # fmt: skip
    try:
        unit = unit_file.read_text()
    except OSError:
        return
    if "--bridge-only" in unit:
        typer.echo(
            f"note: {unit_file} still runs `volar setup --bridge-only` at each start of volantd, "
            "which sets the bridge up again: rewrite it with `volar setup --systemd` (no --bridge)"
        )


def _carry_out(steps: list[Step], *, dry_run: bool, yes: bool, command: str) -> None:
    """Show the steps, then run the pending ones (asking first unless --yes); returns when all
    ran, exits when there was nothing to run, or on the first failure."""
    blocked = [step for step in steps if step.kind is StepKind.BLOCKED]
    if dry_run:
        for step in steps:
            typer.echo(step.shell())
        typer.echo("# dry run: nothing was changed")
        if root_steps(steps) and os.geteuid() != 0:
            typer.echo(f"# {len(root_steps(steps))} of these commands need root: sudo {command}")
        raise typer.Exit(1 if blocked else 0)
    for step in steps:
        if not step.pending:
            typer.echo(_describe(step))
    if blocked:
        what = command.removeprefix("volar ")
        fail(f"{what} cannot continue: " + "; ".join(f"{s.title}: {s.note}" for s in blocked))
    pending = [step for step in steps if step.pending]
    if not pending:
        typer.echo("Nothing to do: this host is set up.")
        raise typer.Exit(0)
    needs_root = root_steps(steps)
    if needs_root and os.geteuid() != 0:
        lines = "\n".join(f"  {step.shell().splitlines()[0]}" for step in needs_root)
        fail(
            f"these steps need root:\n{lines}\nrun `sudo {command}` "
            f"(`{command} --dry-run` shows every command without changing anything)"
        )
    if not yes:
        if not sys.stdin.isatty():
            fail(f"{command} changes this host: pass --yes to go ahead (or --dry-run to preview)")
        typer.echo("Will run:\n" + "\n".join(f"  {s.shell().splitlines()[0]}" for s in pending))
        if not typer.confirm("Go ahead?", default=False):
            fail("cancelled: nothing was changed")
    for step in pending:
        _execute(step)


def _describe(step: Step) -> str:
    mark = {StepKind.DONE: "ok", StepKind.SKIP: "skipped", StepKind.BLOCKED: "cannot"}
    return f"{mark.get(step.kind, step.kind.value)}: {step.title}: {step.note}"


def _execute(step: Step) -> None:
    """Run one step, echoing it first; the first failure stops setup with its stderr."""
    if step.kind is StepKind.WRITE:
        assert step.path is not None
        typer.echo(f"+ write {step.path}")
        try:
            step.path.parent.mkdir(parents=True, exist_ok=True)
            partial = step.path.with_name(f".{step.path.name}.{os.getpid()}.tmp")
            partial.write_text(step.content)
            partial.chmod(0o644)
            os.replace(partial, step.path)
        except OSError as error:
            fail(f"cannot write {step.path}: {error.strerror}")
        return
    if step.kind is StepKind.REMOVE:
        assert step.path is not None
        typer.echo(f"+ {step.shell()}")
        try:
            step.path.unlink(missing_ok=True)
        except OSError as error:
            fail(f"cannot remove {step.path}: {error.strerror}")
        return
    typer.echo(f"+ {step.shell()}")
    sys.stdout.flush()
    try:
        result = subprocess.run(
            list(step.command),
            env={**os.environ, **step.env},
            stderr=subprocess.PIPE,
            input=step.content or None,
            stdin=None if step.content else subprocess.DEVNULL,
            text=True,
            check=False,
        )
    except OSError as error:
        fail(f"cannot run {step.command[0]}: {error.strerror}")
    if result.returncode != 0:
        stderr = result.stderr.strip()
        fail(f"{step.title} failed (exit {result.returncode})" + (f":\n{stderr}" if stderr else ""))
