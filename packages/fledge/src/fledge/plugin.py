"""The plugin manifest JSON written beside a built image (volantd's format, pluginspec v1).

It starts from an optional ``manifest.toml`` template (runtime defaults: name, version,
resources, workload, network...), takes ``--name``/``--version`` over the template, and gets
the artifact filled in: ``initramfs = {url: <absolute path>, checksum: sha256:<hex>,
format}``. Without a template the name defaults to the config folder's name and the version to
``0.1.0``. The result is validated with pluginspec before it is written.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pluginspec import PluginManifest, SpecError, parse_manifest, parse_manifest_toml

from .errors import FledgeError

DEFAULT_VERSION = "0.1.0"
INITRAMFS_FORMATS = {"none": "cpio", "gzip": "cpio.gz", "zstd": "cpio.zst"}


def load_template(path: Path) -> tuple[PluginManifest, dict[str, Any]]:
    """A ``manifest.toml`` parsed as a template, and its raw table."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise FledgeError(f"cannot read manifest template {path}: {exc.strerror}") from None
    try:
        template = parse_manifest_toml(text, source=str(path))
    except SpecError as exc:
        raise FledgeError(f"invalid manifest template:\n{exc}") from None
    return template, tomllib.loads(text.decode("utf-8-sig"))


def _label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    return re.sub(r"-{2,}", "-", label).strip("-")[:63].rstrip("-") or "plugin"


def plugin_manifest(
    *,
    artifact: Path,
    sha256: str,
    compression: str,
    template: Path | None,
    default_name: str,
    name: str | None = None,
    version: str | None = None,
) -> PluginManifest:
    """The manifest for the initramfs at ``artifact`` (``sha256``: hex of its bytes)."""
    if template is not None:
        parsed, raw = load_template(template)
        if parsed.rootfs is not None:
            raise FledgeError(
                f"{template}: the template sets [rootfs], but this build produces an "
                "initramfs; remove [rootfs] (fledge fills in [initramfs] itself)"
            )
        data = parsed.model_dump(mode="json")
        explicit_runtime = bool(str(raw.get("runtime") or "").strip())
        if name is not None:
            data["name"] = name
            if not explicit_runtime:
                data["runtime"] = name
        if version is not None:
            data["version"] = version
    else:
        chosen = name or _label(default_name)
        data = {"schema_version": "v1", "name": chosen, "version": version or DEFAULT_VERSION}
    data["initramfs"] = {
        "url": str(artifact.resolve()),
        "checksum": f"sha256:{sha256}",
        "format": INITRAMFS_FORMATS[compression],
    }
    data["rootfs"] = None
    try:
        return parse_manifest(data, source="plugin manifest")
    except SpecError as exc:
        hint = " (fix --name/--version or the template)"
        raise FledgeError(f"the generated plugin manifest is invalid{hint}:\n{exc}") from None
