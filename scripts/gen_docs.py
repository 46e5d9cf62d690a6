"""Generate the reference pages of docs/ from the code: `make docs`.

    python scripts/gen_docs.py [--check]

- docs/cli.md: every volar command, from its Typer command tree (volar.reference);
- docs/reference.md: every field of the plugin manifest, fledge.toml, the VM config (and its
  patch) and the guest's vm.json, from the JSON Schemas in docs/schemas/ (which
  `python -m pluginspec schemas` writes from the models; `make docs` runs that first).

With --check nothing is written; the exit status is 1 when a page differs from what the code
says (the unit tests check the same).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "docs" / "schemas"
CLI_PAGE = REPO / "docs" / "cli.md"
REFERENCE_PAGE = REPO / "docs" / "reference.md"

# (schema file, section title, what the document is and where it is written)
DOCUMENTS = [
    ("plugin-manifest-v1.json", "Plugin manifest",
     "What `volar plugins install` reads: `plugin.manifest.json`, as `fledge build` writes it, "
     "or any upstream manifest. `manifest.toml`, the template fledge completes, has the same "
     "fields in TOML (boot media may be left out there). Rules beyond the types: "
     "[pluginspec.md](pluginspec.md#plugin-manifest-v1)."),
    ("fledge-toml-v1.json", "fledge.toml",
     "The build recipe `fledge build` reads ([fledge.md](fledge.md)); rules beyond the types: "
     "[pluginspec.md](pluginspec.md#fledgetoml-v1)."),
    ("vm-config-v1.json", "VM config",
     "A VM's versioned config (`volar vms config get`, `volar vms create --config FILE`, "
     "`GET /api/v1/vms/{name}/config`); `manifest` is the plugin manifest snapshotted when "
     "the VM was created."),
    ("vm-config-patch-v1.json", "VM config patch",
     "What `volar vms config set` and `PATCH /api/v1/vms/{name}/config` take: every field "
     "optional, an absent field unchanged, `null` back to the default."),
    ("vm-json-contract-1.json", "Guest boot contract (vm.json)",
     "`/etc/volant/vm.json`, written by volantd into every guest's initrd and read by its init "
     "and kestrel ([guest.md](guest.md), [architecture.md](architecture.md#the-boot-contract))."),
]  # fmt: skip

# Definitions documented in a section of their own: linked to, not expanded again.
LINKED = {"PluginManifest": "Plugin manifest"}

HEADER = """\
# Configuration reference

<!-- Generated from docs/schemas/ by `make docs` (scripts/gen_docs.py): do not edit. -->

Every field of the files and documents Volant reads, from the JSON Schemas in
[schemas/](schemas/) (themselves generated from the `pluginspec` models). A nested field is
written with dots (`workload.restart.policy`), a list's items with `[]` (`disks[].name`) and a
map's values with `<key>` (`actions.<key>.method`). Unknown keys are errors, naming the key.
"""


def config_reference(schemas: Path = SCHEMAS) -> str:
    """docs/reference.md: one section and one table per document."""
    lines = [HEADER]
    lines += [f"- [{title}](#{_anchor(title)})" for _, title, _ in DOCUMENTS]
    for file, title, intro in DOCUMENTS:
        schema = json.loads((schemas / file).read_text())
        lines += ["", f"## {title}", "", intro, ""]
        if schema.get("description"):
            lines += [_paragraphs(schema["description"]), ""]
        lines += [
            f"Schema: [schemas/{file}](schemas/{file}).",
            "",
            "| field | type | required | default | description |",
            "|---|---|---|---|---|",
        ]
        lines += [_row(*row) for row in _Walker(schema).rows(schema, "", frozenset())]
    return "\n".join(lines).rstrip() + "\n"


class _Walker:
    """Flattens one schema into (path, type, required, default, description) rows."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = root.get("$defs", {})

    def resolve(self, schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """(definition name, schema) behind a `$ref`; (None, schema) for anything else."""
        ref = schema.get("$ref")
        if ref is None:
            return None, schema
        name = ref.rsplit("/", 1)[-1]
        return name, self.defs[name]

    def options(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        """The alternatives of an `anyOf`/`oneOf` (itself otherwise), null left out."""
        choices = schema.get("anyOf") or schema.get("oneOf") or [schema]
        return [choice for choice in choices if choice.get("type") != "null"]

    def rows(
        self, schema: dict[str, Any], prefix: str, seen: frozenset[str]
    ) -> Iterator[tuple[str, str, bool, str, str]]:
        required = set(schema.get("required", ()))
        for name, field in schema.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            yield path, self.type_of(field), name in required, _default(field), self.about(field)
            yield from self.nested(field, path, seen)

    def nested(
        self, field: dict[str, Any], path: str, seen: frozenset[str]
    ) -> Iterator[tuple[str, str, bool, str, str]]:
        """The rows of the objects a field holds: itself, its list items, its map values."""
        for option in self.options(field):
            name, target = self.resolve(option)
            if name in LINKED or name in seen:
                continue
            inner = seen | {name} if name else seen
            if "properties" in target:
                yield from self.rows(target, path, inner)
            elif target.get("type") == "array" and isinstance(target.get("items"), dict):
                yield from self.nested(target["items"], f"{path}[]", inner)
            elif isinstance(target.get("additionalProperties"), dict):
                yield from self.nested(target["additionalProperties"], f"{path}.<key>", inner)

    def type_of(self, schema: dict[str, Any]) -> str:
        name, target = self.resolve(schema)
        if name in LINKED:
            return f"object ({LINKED[name].lower()})"
        if name == "JsonValue":
            return "any JSON"
        choices = schema.get("anyOf") or schema.get("oneOf")
        if choices:
            kinds = [self.type_of(choice) for choice in choices if choice.get("type") != "null"]
            nullable = len(kinds) < len(choices)
            return " or ".join(dict.fromkeys(kinds)) + (" or null" if nullable else "")
        if "enum" in target:
            return " \\| ".join(json.dumps(value) for value in target["enum"])
        if "const" in target:
            return json.dumps(target["const"])
        kind = target.get("type")
        if isinstance(kind, list):
            return " or ".join(kind)
        if kind == "array":
            items = target.get("items")
            return f"list of {self.type_of(items)}" if isinstance(items, dict) else "list"
        if kind == "object" or "properties" in target:
            values = target.get("additionalProperties")
            if isinstance(values, dict) and "properties" not in target:
                return f"map of string to {self.type_of(values)}"
            return "object"
        if kind is None:
            return "any JSON"
        return kind + _constraints(target)

    def about(self, field: dict[str, Any]) -> str:
        """The field's description, else that of the definition it refers to."""
        if field.get("description"):
            return _sentence(field["description"])
        for option in self.options(field):
            name, target = self.resolve(option)
            if name in LINKED:
                return f"See [{LINKED[name]}](#{_anchor(LINKED[name])})."
            if name and target.get("description"):
                return _sentence(target["description"].split("\n\n")[0])
        return ""


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                      ("exclusiveMaximum", "<")):  # fmt: skip
        if key in schema:
            parts.append(f"{sign} {schema[key]}")
    if "minLength" in schema:
        parts.append(f"length ≥ {schema['minLength']}")
    if "maxLength" in schema:
        parts.append(f"length ≤ {schema['maxLength']}")
    if "pattern" in schema:
        parts.append(f"matching {schema['pattern']}")
    return f" ({', '.join(parts)})" if parts else ""


def _default(field: dict[str, Any]) -> str:
    if "default" not in field:
        return ""
    return json.dumps(field["default"], separators=(", ", ": "), ensure_ascii=False)


def _sentence(text: str) -> str:
    """A description on one line, reStructuredText ``code`` as Markdown `code`."""
    return " ".join(re.sub(r"``([^`]+)``", r"`\1`", text).split())


def _paragraphs(text: str) -> str:
    return "\n\n".join(_sentence(paragraph) for paragraph in text.split("\n\n"))


def _row(path: str, kind: str, required: bool, default: str, about: str) -> str:
    cells = [f"`{path}`", kind, "yes" if required else "", f"`{default}`" if default else "",
             about.replace("|", "\\|")]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def pages() -> dict[Path, str]:
    """Each generated page and what it should hold."""
    from volar.reference import render

    return {CLI_PAGE: render(), REFERENCE_PAGE: config_reference()}


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python scripts/gen_docs.py [--check]", file=sys.stderr)
        return 2
    stale = []
    for path, text in pages().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if check and stale:
        names = ", ".join(str(path.relative_to(REPO)) for path in stale)
        print(f"stale: {names}; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
