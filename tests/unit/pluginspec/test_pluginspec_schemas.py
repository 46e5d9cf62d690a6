"""The committed JSON Schemas in docs/schemas are exactly what the models generate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pluginspec import generate_schemas, stale_schemas, write_schemas

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "docs" / "schemas"


def test_committed_schemas_are_up_to_date() -> None:
    stale = stale_schemas(SCHEMAS)
    assert stale == [], f"stale schemas {stale}: run `uv run python -m pluginspec schemas`"


def test_every_document_kind_has_a_schema() -> None:
    assert sorted(generate_schemas()) == [
        "fledge-toml-v1.json",
        "plugin-manifest-v1.json",
        "vm-config-patch-v1.json",
        "vm-config-v1.json",
        "vm-json-contract-1.json",
    ]


def test_schemas_describe_the_documents() -> None:
    manifest = json.loads(generate_schemas()["plugin-manifest-v1.json"])
    assert manifest["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert manifest["required"] == ["name", "version"]
    assert "$schema" in manifest["properties"]
    assert manifest["additionalProperties"] is False
    mode = manifest["$defs"]["Network"]["properties"]["mode"]
    assert mode["enum"] == ["user", "isolated", "bridged", "dhcp", "vsock", "bridge"]
    fledge = json.loads(generate_schemas()["fledge-toml-v1.json"])
    assert fledge["required"] == ["version", "strategy"]


def test_check_command_fails_on_stale_and_passes_after_writing(tmp_path: Path) -> None:
    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pluginspec", "schemas", "--check", str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
        )

    missing = check()
    assert missing.returncode == 1
    assert f"{tmp_path}/plugin-manifest-v1.json: stale" in missing.stdout

    write = subprocess.run(
        [sys.executable, "-m", "pluginspec", "schemas", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert write.returncode == 0 and write.stdout.count("wrote ") == 5
    assert check().returncode == 0

    (tmp_path / "vm-config-v1.json").write_text("{}\n")
    stale = check()
    assert stale.returncode == 1
    assert (
        stale.stdout.strip()
        == f"{tmp_path}/vm-config-v1.json: stale (run: python -m pluginspec schemas)"
    )
    assert [p.name for p in write_schemas(tmp_path)] == ["vm-config-v1.json"]
