"""Command line: ``python -m pluginspec validate FILE...`` and ``python -m pluginspec schemas``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .schemas import stale_schemas, write_schemas
from .validate import DocumentKind, validate_file


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pluginspec", description="Volant document models: validate, schemas."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check plugin manifests, manifest.toml, fledge.toml, VM configs and vm.json files",
        description="Check documents; the kind is detected from the file name and contents. "
        "Exit status: 0 all valid, 1 some invalid, 2 usage error.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "--kind",
        choices=[k.value for k in DocumentKind],
        help="validate every FILE as this kind instead of detecting it",
    )

    schemas = commands.add_parser(
        "schemas",
        help="write the JSON Schemas (or check that they are up to date)",
        description="Write the JSON Schemas of every document into DIR (default docs/schemas).",
    )
    schemas.add_argument("directory", nargs="?", default="docs/schemas", metavar="DIR")
    schemas.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a schema file is stale"
    )
    return parser


def _print(line: str) -> None:
    sys.stdout.write(line.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "validate":
        kind = DocumentKind(args.kind) if args.kind else None
        failed = False
        for name in args.files:
            report = validate_file(name, kind)
            failed = failed or not report.ok
            for line in report.lines():
                _print(line)
        return 1 if failed else 0
    if args.check:
        stale = stale_schemas(args.directory)
        for name in stale:
            _print(f"{args.directory}/{name}: stale (run: python -m pluginspec schemas)")
        return 1 if stale else 0
    for path in write_schemas(args.directory):
        _print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
