"""docs/cli.md is exactly what volar's command tree generates (`make docs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from volar.cli import app
from volar.reference import render

CLI_PAGE = Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def test_committed_cli_reference_is_up_to_date() -> None:
    stale = CLI_PAGE.read_text() != render()
    assert not stale, "docs/cli.md is stale: run `make docs`"


def test_every_command_has_a_section() -> None:
    root = typer.main.get_command(app)
    page = render()
    for group in ("plugins", "vms"):
        commands = root.commands[group].commands  # type: ignore[attr-defined]
        assert commands
        for name in commands:
            assert f"`volar {group} {name}`\n" in page


def sample_app() -> typer.Typer:
    sample = typer.Typer(help="A sample tool.")
    things = typer.Typer(help="Things.")
    sample.add_typer(things, name="things")

    @things.command("make")
    def make(
        name: Annotated[str, typer.Argument(help="what to call it")],
        size: Annotated[int, typer.Option(min=1, help="how big")] = 3,
        tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="labels")] = None,
        dry_run: Annotated[bool, typer.Option(help="only say what would happen")] = False,
    ) -> None:
        """Make a thing.

        It is made at once.
        """

    @things.command("secret", hidden=True)
    def secret() -> None:
        """Not for users."""

    return sample


def test_commands_arguments_and_options_are_described() -> None:
    page = render(sample_app(), name="tool")

    assert "- [`tool things make`](#tool-things-make): Make a thing." in page
    assert "#### `tool things make`\n\nMake a thing.\n\nIt is made at once.\n" in page
    assert "Usage: `tool things make [OPTIONS] NAME`" in page
    assert "| `NAME` | `str` | required | what to call it |" in page
    assert "| `--size` | `int ≥ 1` | `3` | how big |" in page
    assert "| `--tag`, `-t` | `list[str], repeatable` |  | labels |" in page
    assert "| `--dry-run`, `--no-dry-run` | `flag` | `--no-dry-run` | only say what would" in page
    assert "Commands: [`make`](#tool-things-make)." in page
    assert "secret" not in page
