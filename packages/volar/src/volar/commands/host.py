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
from volar.host.checks import inspect_host
from volar.host.setup import DEFAULT_UNIT, Step, StepKind, plan_setup, root_steps, setup_facts
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
        bool, typer.Option("--bridge", help="bridged networking (not available yet)")
    ] = False,
) -> None:
    """Install what this host lacks (as root; --dry-run shows the commands).

    Missing apt packages (qemu-system-x86, busybox-static, gcc, libc6-dev), the reference
    guest kernel (volantd kernels fetch) and, with --systemd, a volantd unit that is enabled
    and started when systemd runs. Safe to run again: what is in place is skipped.
    """
    if bridge:
        usage_error(
            "--bridge is not available yet: bridged networking arrives with a later release. "
            "VMs use QEMU user-mode networking, which needs no host setup"
        )
    report = inspect_host(None, probe=False)
    facts = setup_facts(report, systemd=systemd, unit_path=unit_file)
    steps = plan_setup(report.checks, facts)
    blocked = [step for step in steps if step.kind is StepKind.BLOCKED]
    if dry_run:
        for step in steps:
            typer.echo(step.shell())
        typer.echo("# dry run: nothing was changed")
        if root_steps(steps) and os.geteuid() != 0:
            typer.echo(f"# {len(root_steps(steps))} of these commands need root: sudo volar setup")
        if blocked:
            raise typer.Exit(1)
        return
    for step in steps:
        if not step.pending:
            typer.echo(_describe(step))
    if blocked:
        fail("setup cannot continue: " + "; ".join(f"{s.title}: {s.note}" for s in blocked))
    pending = [step for step in steps if step.pending]
    if not pending:
        typer.echo("Nothing to do: this host is set up.")
        return
    needs_root = root_steps(steps)
    if needs_root and os.geteuid() != 0:
        lines = "\n".join(f"  {step.shell().splitlines()[0]}" for step in needs_root)
        fail(
            f"these steps need root:\n{lines}\nrun `sudo volar setup` "
            "(`volar setup --dry-run` shows every command without changing anything)"
        )
    if not yes:
        if not sys.stdin.isatty():
            fail("setup changes this host: pass --yes to go ahead (or --dry-run to preview)")
        typer.echo("Will run:\n" + "\n".join(f"  {s.shell().splitlines()[0]}" for s in pending))
        if not typer.confirm("Go ahead?", default=False):
            fail("cancelled: nothing was changed")
    for step in pending:
        _execute(step)
    typer.echo("Setup complete.")


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
    typer.echo(f"+ {step.shell()}")
    sys.stdout.flush()
    try:
        result = subprocess.run(
            list(step.command),
            env={**os.environ, **step.env},
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            check=False,
        )
    except OSError as error:
        fail(f"cannot run {step.command[0]}: {error.strerror}")
    if result.returncode != 0:
        stderr = result.stderr.strip()
        fail(f"{step.title} failed (exit {result.returncode})" + (f":\n{stderr}" if stderr else ""))
