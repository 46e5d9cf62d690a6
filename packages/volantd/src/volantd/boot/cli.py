"""`volantd boot-image`: the boot initramfs of rootfs plugins, built ahead of the first VM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from volantd.boot.bootimage import boot_image_dir, ensure_boot_initramfs
from volantd.errors import VolantError
from volantd.paths import cache_dir, volant_home

boot_image_app = typer.Typer(
    no_args_is_help=True,
    help="The boot initramfs rootfs plugins boot with (init, kestrel, Python runtime).",
)

HomeOption = Annotated[
    Path | None, typer.Option(help="state folder [env VOLANT_HOME, default /var/lib/volant]")
]


def _cache_root(home: Path | None) -> Path:
    """The cache `volantd serve` uses for this home (VOLANT_CACHE_DIR does not apply to it)."""
    return cache_dir(home.expanduser().resolve() if home is not None else volant_home())


@boot_image_app.command("build")
def build(
    home: HomeOption = None,
    rebuild: Annotated[bool, typer.Option(help="build again even if it is cached")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Build (or find) the boot initramfs in volantd's cache, so the first rootfs VM does not
    wait for it."""
    root = _cache_root(home)
    try:
        image = ensure_boot_initramfs(root, rebuild=rebuild)
    except VolantError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    size = image.path.stat().st_size
    if as_json:
        typer.echo(json.dumps({"path": str(image.path), "key": image.key, "size": size,
                               "built_s": round(image.built_s, 3)}))  # fmt: skip
        return
    what = f"built in {image.built_s:.1f} s" if image.built else "already built"
    typer.echo(f"{image.path} ({size / 2**20:.1f} MiB, {what})")


@boot_image_app.command("path")
def path(home: HomeOption = None) -> None:
    """Print where the boot initramfs of this volantd version is (or will be) cached."""
    from fledge.bootimage import boot_image_key

    root = _cache_root(home)
    typer.echo(boot_image_dir(root) / f"{boot_image_key()}.cpio")


__all__ = ["boot_image_app"]
