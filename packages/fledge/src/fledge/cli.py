"""The `fledge` command line."""

from __future__ import annotations

import posixpath
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.progress import Progress, SpinnerColumn, Task, TaskID, TextColumn
from rich.text import Text

from fledge import __version__
from pluginspec import validate_file

from .archive import read_archive
from .errors import FledgeError
from .initramfs import BuildOptions, BuildResult
from .initramfs import build as run_build
from .rootfs.builder import RootfsBuildResult
from .rootfs.inspect import is_disk_image, list_disk_image

app = typer.Typer(no_args_is_help=True, help="Build Volant plugin images.")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@app.command()
def version() -> None:
    """Print the fledge version."""
    typer.echo(f"fledge {__version__}")


@app.command()
def validate(
    files: list[Path] = typer.Argument(  # noqa: B008 - typer declares arguments this way
        None, help="fledge.toml files or plugin manifests (default: ./fledge.toml)"
    ),
) -> None:
    """Check fledge.toml files and manifests; print every error with its field path."""
    reports = [validate_file(path) for path in files or [Path("fledge.toml")]]
    for report in reports:
        for line in report.lines():
            typer.echo(line, err=not report.ok)
    if not all(report.ok for report in reports):
        raise typer.Exit(1)


class _StepMark(SpinnerColumn):
    """A spinner while the step runs, then its mark (✓ or ✗)."""

    def render(self, task: Task) -> RenderableType:
        mark = task.fields.get("mark")
        return Text.from_markup(mark) if mark else super().render(task)


class StepDisplay:
    """Shows build steps as they run (spinner, then a tick and the time each took)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            _StepMark(),
            TextColumn("{task.description}"),
            TextColumn("[dim]{task.fields[took]}[/]"),
            console=console,
            transient=False,
        )
        self.current: TaskID | None = None
        self.started = time.monotonic()
        self.transfers: dict[str, TaskID] = {}
        self.transfer_lock = threading.Lock()

    def __enter__(self) -> StepDisplay:
        self.progress.start()
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if self.current is not None:
            if error is None:
                self._finish()
            else:
                self.progress.update(self.current, mark="[red]✗[/]")
        self.progress.stop()

    def _finish(self) -> None:
        if self.current is not None:
            took = time.monotonic() - self.started
            self.progress.update(self.current, mark="[green]✓[/]", took=f"{took:.1f} s")

    def step(self, title: str) -> None:
        self._finish()
        self.started = time.monotonic()
        self.current = self.progress.add_task(title, total=None, took="", mark="")

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]note:[/] {message}", highlight=False)

    def transfer(self, blob: str, done: int, total: int | None) -> None:
        """A line per downloading blob, under the current step (called from worker threads)."""
        with self.transfer_lock:
            task = self.transfers.get(blob)
            if task is None:
                task = self.progress.add_task("", total=None, took="", mark="")
                self.transfers[blob] = task
        size = f"{_size(done)} of {_size(total)}" if total else _size(done)
        finished = total is not None and done >= total
        self.progress.update(
            task,
            description=f"  [dim]{blob}[/] {size}",
            mark="[green]↓[/]" if finished else "",
        )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _rootfs_summary(result: RootfsBuildResult) -> str:
    manifest = result.manifest
    how = "up to date (cache hit)" if result.cached else f"built in {result.duration_s:.1f} s"
    lines = [
        f"{result.artifact.name} ({result.fstype} root disk) {how}",
        f"  artifact  {result.artifact}",
        f"  size      {_size(result.size)} ({_size(result.content_bytes)} of files, "
        f"{result.entries} paths)",
        f"  sha256    {result.sha256}",
        f"  image     {result.image}@{result.image_digest} ({result.platform})",
        f"  manifest  {result.manifest_path} ({manifest.name} {manifest.version})",
    ]
    return "\n".join(lines)


def _summary(result: BuildResult | RootfsBuildResult) -> str:
    if isinstance(result, RootfsBuildResult):
        return _rootfs_summary(result)
    manifest = result.manifest
    lines = [
        f"built {result.artifact.name} (initramfs, {result.init_mode} init mode) "
        f"in {result.duration_s:.1f} s",
        f"  artifact  {result.artifact}",
        f"  size      {_size(result.size)} ({result.compression}; "
        f"{_size(result.uncompressed_size)} uncompressed)",
        f"  sha256    {result.sha256}",
        f"  entries   {result.entries}",
        f"  manifest  {result.manifest_path} ({manifest.name} {manifest.version})",
    ]
    return "\n".join(lines)


@app.command()
def build(
    config: Annotated[Path, typer.Option("--config", "-c", help="Build config.")] = Path(
        "fledge.toml"
    ),
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output folder (default: build/ next to the config)."),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            "-m",
            help="manifest.toml template (default: manifest.toml next to the config, if any).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Plugin name for the manifest.")] = None,
    plugin_version: Annotated[
        str | None, typer.Option("--version", help="Plugin version for the manifest.")
    ] = None,
    platform: Annotated[
        str,
        typer.Option(help="oci_rootfs: image platform to pull, OS/ARCH[/VARIANT]."),
    ] = "linux/amd64",
    creds: Annotated[
        str | None,
        typer.Option(
            envvar="FLEDGE_CREDS",
            help="oci_rootfs: registry credentials USER:PASS (default: docker's config.json).",
        ),
    ] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="oci_rootfs: allow a plain-HTTP registry.")
    ] = False,
) -> None:
    """Build the image fledge.toml describes, and its plugin manifest. No root needed."""
    options = BuildOptions(
        output_dir=output,
        manifest=manifest,
        name=name,
        version=plugin_version,
        platform=platform,
        creds=creds,
        insecure_http=insecure_http,
    )
    console = Console(stderr=True)
    started = time.monotonic()
    try:
        with StepDisplay(console) as display:
            result = run_build(config, options, display)
    except FledgeError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted after {time.monotonic() - started:.1f} s", err=True)
        raise typer.Exit(130) from None
    typer.echo(_summary(result))


@app.command()
def inspect(
    artifact: Annotated[
        Path,
        typer.Argument(
            help="An initramfs (cpio, cpio.gz, cpio.zst) or a root disk (ext4, squashfs)."
        ),
    ],
) -> None:
    """List an initramfs or root disk: type and mode, owner, size (or device numbers), path."""
    try:
        if is_disk_image(artifact):
            lines = list_disk_image(artifact)
            _print_lines(lines)
            typer.echo(f"{len(lines)} entries", err=True)
            return
        members = read_archive(artifact)
    except FledgeError as exc:
        raise _fail(str(exc)) from None
    lines = []
    total = 0
    for member in members:
        if member.kind in ("chardev", "blockdev"):
            size = f"{member.rdev[0]},{member.rdev[1]}"
        else:
            size = str(member.size)
            total += member.size if member.kind == "file" else 0
        tail = f" -> {member.target}" if member.kind == "symlink" else ""
        path = posixpath.normpath("/" + member.path)
        owner = f"{member.uid}/{member.gid}"
        lines.append(f"{stat.filemode(member.mode)} {owner} {size:>10} {path}{tail}")
    _print_lines(lines)
    typer.echo(f"{len(members)} entries, {_size(total)} in files", err=True)


def _print_lines(lines: list[str]) -> None:
    try:
        sys.stdout.write("\n".join(lines) + "\n" if lines else "")
        sys.stdout.flush()
    except BrokenPipeError:  # `fledge inspect X | head`
        sys.stderr.close()
        raise typer.Exit(0) from None
