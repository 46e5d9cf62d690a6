"""The CLI reference (docs/cli.md), generated from volar's command tree.

``python -m volar.reference [--check] [FILE]`` writes FILE (default ``docs/cli.md``); with
``--check`` it writes nothing and exits 1 when FILE differs from what the commands say. Every
group and command is listed with its help, arguments and options (type, default, description),
in the order ``volar --help`` shows them. Hidden commands and options are left out.
"""

from __future__ import annotations

import enum
import inspect
import sys
from pathlib import Path
from typing import Any

import typer

DEFAULT_OUTPUT = Path("docs/cli.md")

HEADER = """\
# volar command reference

<!-- Generated from volar's commands by `make docs` (python -m volar.reference): do not edit. -->

`volar` is the CLI of Volant ([volar.md](volar.md) explains how it finds volantd, its output
formats and exit statuses). Global options go before the command
(`volar --api http://127.0.0.1:7777 vms list`); every command also takes `--help`.
"""


def render(app: typer.Typer | None = None, name: str = "volar") -> str:
    """The Markdown reference of `app` (default: volar's), one section per command."""
    if app is None:
        from volar.cli import app as volar_app

        app = volar_app
    root = typer.main.get_command(app)
    commands = list(_walk(root, typer.Context(root, info_name=name), (name,)))
    lines = [HEADER, "## Commands", ""]
    for path, command, _ctx in commands:
        depth = "  " * (len(path) - 1)
        summary = _first_sentence(command.help or "")
        lines.append(f"{depth}- [`{' '.join(path)}`](#{_anchor(path)}){_dash(summary)}")
    for path, command, ctx in commands:
        lines += ["", *_command_section(path, command, ctx)[:-1]]
    return "\n".join(lines).rstrip() + "\n"


def _walk(command: Any, ctx: typer.Context, path: tuple[str, ...]) -> Any:
    """(path, command, context) of `command` and everything under it, depth first."""
    yield path, command, ctx
    for name, sub in _subcommands(command, ctx):
        yield from _walk(sub, typer.Context(sub, info_name=name, parent=ctx), (*path, name))


def _subcommands(command: Any, ctx: typer.Context) -> list[tuple[str, Any]]:
    """The visible commands of a group, in `--help` order (none for a plain command)."""
    if not hasattr(command, "list_commands"):
        return []
    found = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
    return [(name, sub) for name, sub in found if sub is not None and not sub.hidden]


def _command_section(path: tuple[str, ...], command: Any, ctx: typer.Context) -> list[str]:
    heading = "#" * min(len(path) + 1, 4)
    lines = [f"{heading} `{' '.join(path)}`", ""]
    if command.help:
        lines += [_help_text(command.help), ""]
    lines += [f"Usage: `{_usage(path, command, ctx)}`", ""]
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    if params:
        lines += ["| argument or option | type | default | description |", "|---|---|---|---|"]
        lines += [_param_row(param, ctx) for param in params]
        lines.append("")
    subcommands = [name for name, _ in _subcommands(command, ctx)]
    if subcommands:
        links = ", ".join(f"[`{name}`](#{_anchor((*path, name))})" for name in subcommands)
        lines += [f"Commands: {links}.", ""]
    return lines


def _usage(path: tuple[str, ...], command: Any, ctx: typer.Context) -> str:
    pieces = [*path]
    if any(p.param_type_name == "option" for p in command.params):
        pieces.append("[OPTIONS]")
    for param in command.params:
        if param.param_type_name != "argument":
            continue
        metavar = _argument_name(param)
        if (param.nargs != 1 or param.multiple) and not metavar.endswith("..."):
            metavar += "..."
        pieces.append(metavar if param.required else f"[{metavar}]")
    if hasattr(command, "list_commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _param_row(param: Any, ctx: typer.Context) -> str:
    if param.param_type_name == "argument":
        name = f"`{_argument_name(param)}`"
    else:
        name = ", ".join(f"`{opt}`" for opt in (*param.opts, *param.secondary_opts))
    if getattr(param, "is_flag", False):
        kind = "flag"
    else:
        kind = param.display_type(ctx).strip("<>")
        kind = _with_range(kind.replace(" range", ""), param)
        if param.multiple:
            kind += ", repeatable"
    default = "required" if param.required else _default(param)
    description = " ".join((getattr(param, "help", None) or "").split())
    envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    for envvar in envvars:
        if envvar not in description:
            description += f" [env {envvar}]"
    cells = (name, f"`{kind}`", default, description.strip())
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _argument_name(param: Any) -> str:
    return str(param.metavar or param.name).upper()


def _with_range(kind: str, param: Any) -> str:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        return f"{kind} {low} to {high}"
    if low is not None:
        return f"{kind} ≥ {low}"
    if high is not None:
        return f"{kind} ≤ {high}"
    return kind


def _default(param: Any) -> str:
    value = param.default
    if callable(value):
        return "computed"
    if value is None or (param.multiple and not value):
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        if getattr(param, "secondary_opts", None):  # --start/--no-start: name the default
            return f"`{param.opts[0] if value else param.secondary_opts[0]}`"
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def _help_text(text: str) -> str:
    """A docstring as Markdown paragraphs (click's ``\\b`` no-rewrap markers dropped)."""
    text = inspect.cleandoc(text).replace("\b\n", "").replace("\b", "")
    return text.strip()


def _first_sentence(text: str) -> str:
    paragraph = " ".join(_help_text(text).split("\n\n")[0].split())
    sentence, stop, _ = paragraph.partition(". ")
    return sentence + ("." if stop else "")


def _dash(summary: str) -> str:
    return f": {summary}" if summary else ""


def _anchor(path: tuple[str, ...]) -> str:
    """GitHub's anchor for a heading `` `volar vms create` ``."""
    return "-".join(path).lower()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    rest = [arg for arg in args if arg != "--check"]
    if len(rest) > 1 or any(arg.startswith("-") for arg in rest):
        print("usage: python -m volar.reference [--check] [FILE]", file=sys.stderr)
        return 2
    output = Path(rest[0]) if rest else DEFAULT_OUTPUT
    text = render()
    current = output.read_text() if output.exists() else None
    if check:
        if current != text:
            print(f"{output} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
