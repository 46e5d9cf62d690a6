"""Printing results: a table by default, ``-o json`` or ``-o yaml`` for scripts."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def emit(data: Any, output: Format, columns: Sequence[tuple[str, str]] | None = None) -> None:
    """Print ``data`` (a record or a list of records) as ``output``; ``columns`` are
    (heading, key) pairs for the table."""
    if output is Format.JSON:
        print(json.dumps(data, indent=2))
    elif output is Format.YAML:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    elif isinstance(data, list):
        table = Table(box=None, header_style="bold")
        for heading, _ in columns or ():
            table.add_column(heading)
        for row in data:
            table.add_row(*(_cell(row.get(key)) for _, key in columns or ()))
        Console(soft_wrap=True).print(table)
    else:
        width = max((len(heading) for heading, _ in columns or ()), default=0)
        for heading, key in columns or ():
            print(f"{heading:<{width}}  {_cell(data.get(key))}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    return str(value)
