"""`volantd kernels`: provision, register and list guest kernels."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from volantd.errors import VolantError
from volantd.kernels.store import KernelEntry, KernelStore

kernels_app = typer.Typer(
    no_args_is_help=True,
    help="Guest kernels: fetch the reference kernel, import others, list them.",
)
# Piped output (scripts, tests) gets whole table rows instead of the 80-column default.
_out = Console(width=None if sys.stdout.isatty() else 240)
_err = Console(stderr=True, soft_wrap=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except VolantError as error:
        _err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(1) from error


def _progress(message: str) -> None:
    _err.print(message, highlight=False, markup=False)


def human_size(size: int) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB, 21.3 MiB."""
    value, unit = float(size), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def _summary(entry: KernelEntry) -> str:
    default = ", default" if entry.is_default else ""
    return (
        f"{entry.name}: kernel {entry.version} ({entry.image_format}, "
        f"{human_size(entry.size)}, {len(entry.modules)} modules{default}) in {entry.directory}"
    )


@kernels_app.command()
def fetch(
    force: Annotated[
        bool, typer.Option("--force", help="Reinstall even if the kernel is up to date.")
    ] = False,
) -> None:
    """Provision the reference kernel: Debian's cloud kernel plus the guest modules."""
    with _user_errors():
        entry = KernelStore.from_environment().fetch(force=force, progress=_progress)
    typer.echo(_summary(entry))


@kernels_app.command("import")
def import_(
    image: Annotated[Path, typer.Argument(help="A bzImage or vmlinux file.")],
    modules: Annotated[
        Path | None,
        typer.Option("--modules", help="The kernel's lib/modules/<release> directory (or parent)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Store name (default: the kernel release).")
    ] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default kernel.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a kernel of the same name.")
    ] = False,
) -> None:
    """Register another kernel image, with the guest modules from its module tree."""
    with _user_errors():
        entry = KernelStore.from_environment().import_kernel(
            image, modules, name, make_default=default, replace=force
        )
    typer.echo(_summary(entry))


@kernels_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the installed kernels."""
    with _user_errors():
        entries = KernelStore.from_environment().list()
    if as_json:
        typer.echo(json.dumps([entry.to_json() for entry in entries], indent=2))
        return
    if not entries:
        _err.print("No kernels installed; run `volantd kernels fetch`.", highlight=False)
        return
    table = Table()
    for header in ("NAME", "VERSION", "FORMAT", "SIZE", "MODULES", "DEFAULT", "SOURCE"):
        table.add_column(header, overflow="fold")  # names matter in full: never cut them
    for entry in entries:
        cells = (
            entry.name,
            entry.version,
            str(entry.image_format),
            human_size(entry.size),
            str(len(entry.modules)),
            "*" if entry.is_default else "",
            entry.source.describe(),
        )
        table.add_row(*(escape(cell) for cell in cells))
    _out.print(table)


@kernels_app.command("default")
def default_(
    name: Annotated[str | None, typer.Argument(help="Kernel to make the default.")] = None,
) -> None:
    """Show the default kernel, or make NAME the default."""
    with _user_errors():
        store = KernelStore.from_environment()
        entry = store.get() if name is None else store.set_default(name)
    typer.echo(_summary(entry))
