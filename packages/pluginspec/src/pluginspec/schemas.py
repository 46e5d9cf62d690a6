"""JSON Schemas of every document, generated from the models into ``docs/schemas/``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from .contract import VMContract
from .fledge_config import FledgeConfig
from .manifest import PluginManifest
from .vmconfig import VMConfig, VMConfigPatch

_DRAFT = "https://json-schema.org/draft/2020-12/schema"

SCHEMA_MODELS: dict[str, tuple[type[BaseModel], Literal["validation", "serialization"], str]] = {
    "plugin-manifest-v1.json": (PluginManifest, "validation", "Volant plugin manifest v1"),
    "fledge-toml-v1.json": (FledgeConfig, "validation", "fledge.toml v1 (as decoded from TOML)"),
    "vm-config-v1.json": (VMConfig, "validation", "Volant VM config v1"),
    "vm-config-patch-v1.json": (VMConfigPatch, "validation", "Volant VM config patch v1"),
    "vm-json-contract-1.json": (VMContract, "serialization", "Guest boot contract 1 (vm.json)"),
}
"""File name → (model, schema mode, title). vm.json is described as written (all keys)."""


def generate_schemas() -> dict[str, str]:
    """Every schema as the exact text written to disk (file name → JSON text)."""
    out: dict[str, str] = {}
    for filename, (model, mode, title) in SCHEMA_MODELS.items():
        schema: dict[str, Any] = {"$schema": _DRAFT, "$id": filename, "title": title}
        generated = model.model_json_schema(mode=mode)
        generated.pop("title", None)
        schema.update(generated)
        out[filename] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return out


def write_schemas(directory: str | os.PathLike[str]) -> list[Path]:
    """Write every schema into ``directory``; returns the files that changed."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    for filename, text in generate_schemas().items():
        target = folder / filename
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            changed.append(target)
    return changed


def stale_schemas(directory: str | os.PathLike[str]) -> list[str]:
    """Names of schema files in ``directory`` that are missing or differ from the models."""
    folder = Path(directory)
    stale = []
    for filename, text in generate_schemas().items():
        target = folder / filename
        try:
            current = target.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != text:
            stale.append(filename)
    return stale
