"""docs/reference.md is exactly what scripts/gen_docs.py makes of docs/schemas (`make docs`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]


def gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_config_reference_is_up_to_date() -> None:
    stale = (ROOT / "docs" / "reference.md").read_text() != gen_docs().config_reference()
    assert not stale, "docs/reference.md is stale: run `make docs`"


def test_every_schema_is_a_section() -> None:
    page = gen_docs().config_reference()
    for schema in sorted((ROOT / "docs" / "schemas").glob("*.json")):
        assert f"(schemas/{schema.name})" in page


def test_nested_fields_are_flattened_with_their_type_default_and_description() -> None:
    page = gen_docs().config_reference()
    manifest = page.split("## Plugin manifest")[1].split("\n## ")[0]

    assert "| `name` | string | yes |  |  |" in manifest
    assert '| `workload.restart.policy` | "never" \\| "on-failure" \\| "always"' in manifest
    assert "| `resources.cpu_cores` | integer (≥ 1) |  | `1` | Number of vCPUs. |" in manifest
    assert "| `network.expose[].port` | integer (≥ 1, ≤ 65535) | yes |" in manifest
    assert '| `actions.<key>.method` | "GET" \\|' in manifest
    assert "| `labels` | map of string to string |" in manifest


def test_documents_embedding_the_manifest_link_to_it() -> None:
    page = gen_docs().config_reference()
    vm_config = page.split("## VM config\n")[1].split("\n## ")[0]

    assert "| `manifest` | object (plugin manifest) | yes |  | See [Plugin manifest]" in vm_config
    assert "`manifest.name`" not in vm_config


def test_every_manifest_property_has_a_row() -> None:
    schema = json.loads((ROOT / "docs/schemas/plugin-manifest-v1.json").read_text())
    page = gen_docs().config_reference()
    for name in schema["properties"]:
        assert f"| `{name}` |" in page
