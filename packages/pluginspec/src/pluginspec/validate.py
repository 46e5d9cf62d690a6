"""Validate document files of any kind; shared by ``python -m pluginspec validate``,
``fledge validate`` and ``volar plugins validate``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from ._codec import as_mapping, parse_json_text, parse_toml_text, read_bytes, validate_model
from .contract import VMContract
from .errors import Issue, SpecError
from .fledge_config import FledgeConfig
from .manifest import PluginManifest
from .vmconfig import VMConfig, VMConfigPatch


class DocumentKind(StrEnum):
    """The kinds of document pluginspec knows."""

    PLUGIN_MANIFEST = "plugin-manifest"
    MANIFEST_TOML = "manifest-toml"
    FLEDGE_CONFIG = "fledge-config"
    VM_CONFIG = "vm-config"
    VM_CONFIG_PATCH = "vm-config-patch"
    VM_CONTRACT = "vm-contract"


_JSON_MODELS: dict[DocumentKind, type[BaseModel]] = {
    DocumentKind.PLUGIN_MANIFEST: PluginManifest,
    DocumentKind.VM_CONFIG: VMConfig,
    DocumentKind.VM_CONFIG_PATCH: VMConfigPatch,
    DocumentKind.VM_CONTRACT: VMContract,
}
_TOML_KINDS = frozenset({DocumentKind.MANIFEST_TOML, DocumentKind.FLEDGE_CONFIG})


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one document: its kind, its problems, the parsed model."""

    path: str
    kind: DocumentKind | None
    issues: tuple[Issue, ...] = ()
    document: BaseModel | None = None

    @property
    def ok(self) -> bool:
        return not self.issues

    def lines(self) -> list[str]:
        """Human-readable result: ``FILE: ok (kind)``, or a header and one line per issue."""
        kind = f" ({self.kind})" if self.kind else ""
        if self.ok:
            return [f"{self.path}: ok{kind}"]
        count = len(self.issues)
        header = f"{self.path}: invalid{kind}: {count} error{'s' if count > 1 else ''}"
        return [header, *(f"  {issue}" for issue in self.issues)]


def detect_kind(name: str, data: Any) -> DocumentKind | None:
    """Guess a document's kind from its file name, then from its keys."""
    base = os.path.basename(name).lower()
    if base == "fledge.toml" or base.endswith(".fledge.toml"):
        return DocumentKind.FLEDGE_CONFIG
    if base == "manifest.toml" or base.endswith(("-manifest.toml", ".manifest.toml")):
        return DocumentKind.MANIFEST_TOML
    if base == "vm.json":
        return DocumentKind.VM_CONTRACT
    if not isinstance(data, dict):
        return None
    if base.endswith(".toml"):
        if "strategy" in data:
            return DocumentKind.FLEDGE_CONFIG
        return DocumentKind.MANIFEST_TOML if "name" in data else None
    if "contract" in data:
        return DocumentKind.VM_CONTRACT
    if "plugin" in data and "manifest" in data:
        return DocumentKind.VM_CONFIG
    if "name" in data:
        return DocumentKind.PLUGIN_MANIFEST
    return None


def _is_toml(name: str, text: bytes) -> bool:
    if name.lower().endswith(".toml"):
        return True
    if name.lower().endswith(".json"):
        return False
    return not text.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"["))


def _validate(kind: DocumentKind, data: dict[str, Any], name: str) -> BaseModel:
    if kind is DocumentKind.MANIFEST_TOML:
        return validate_model(
            PluginManifest, data, source=name, context={"template": True}, table_word="table"
        )
    if kind is DocumentKind.FLEDGE_CONFIG:
        return validate_model(FledgeConfig, data, source=name, table_word="table")
    return validate_model(_JSON_MODELS[kind], data, source=name)


def validate_bytes(data: bytes, name: str, kind: DocumentKind | None = None) -> ValidationReport:
    """Validate a document's bytes; ``name`` (its file name) helps detect the kind."""
    is_toml = kind in _TOML_KINDS if kind is not None else _is_toml(name, data)
    try:
        raw = parse_toml_text(data, source=name) if is_toml else parse_json_text(data, source=name)
    except SpecError as exc:
        return ValidationReport(name, kind or detect_kind(name, None), exc.issues)
    found = kind or detect_kind(name, raw)
    if found is None:
        return ValidationReport(name, None, (Issue("", _UNKNOWN_KIND),))
    what = "TOML table" if is_toml else "JSON object"
    try:
        document = _validate(found, as_mapping(raw, source=name, what=what), name)
    except SpecError as exc:
        return ValidationReport(name, found, exc.issues)
    return ValidationReport(name, found, (), document)


_UNKNOWN_KIND = (
    "cannot tell what kind of document this is: expected a plugin manifest (has 'name'), a "
    "fledge.toml (has 'strategy'), a VM config (has 'plugin' and 'manifest') or a vm.json "
    "(has 'contract')"
)


def validate_file(
    path: str | os.PathLike[str], kind: DocumentKind | None = None
) -> ValidationReport:
    """Validate one file; never raises for a bad document (the report carries the issues).

    Only the document is checked, not the host: paths it names need not exist.
    """
    name = os.fspath(path)
    try:
        data = read_bytes(name)
    except SpecError as exc:
        return ValidationReport(name, kind, exc.issues)
    return validate_bytes(data, name, kind)
