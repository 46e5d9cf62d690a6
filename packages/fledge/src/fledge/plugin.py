"""The plugin manifest JSON written beside a built image (volantd's format, pluginspec v1).

It starts from an optional ``manifest.toml`` template (runtime defaults: name, version,
resources, workload, network...), takes ``--name``/``--version`` over the template, and gets
the artifact filled in: ``initramfs = {url: <absolute path>, checksum: sha256:<hex>,
format}`` or ``rootfs = {url, checksum, format: "raw", fstype}``. Without a template the name
defaults to the config folder's name and the version to ``0.1.0``. A rootfs manifest also gets
the image's runtime (:mod:`fledge.rootfs.imageconfig`) under the template's ``[workload]``,
its exposed ports unless the template lists ``network.expose`` itself, and the image
reference and digest. The result is validated with pluginspec before it is written.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pluginspec import PluginManifest, SpecError, parse_manifest, parse_manifest_toml

from .errors import FledgeError
from .rootfs.imageconfig import ImageRuntime, expose_entries, merge_workload

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


def _base(
    template: Path | None,
    default_name: str,
    name: str | None,
    version: str | None,
    produces: str,
) -> tuple[dict[str, Any], PluginManifest | None]:
    """The manifest data before the artifact is filled in, and the parsed template."""
    if template is None:
        chosen = name or _label(default_name)
        data = {"schema_version": "v1", "name": chosen, "version": version or DEFAULT_VERSION}
        return data, None
    parsed, raw = load_template(template)
    for medium in ("initramfs", "rootfs"):
        if getattr(parsed, medium) is not None:
            raise FledgeError(
                f"{template}: the template sets [{medium}], but fledge fills in the boot "
                f"artifact itself (this build produces {produces}); remove [{medium}]"
            )
    data = parsed.model_dump(mode="json")
    explicit_runtime = bool(str(raw.get("runtime") or "").strip())
    if name is not None:
        data["name"] = name
        if not explicit_runtime:
            data["runtime"] = name
    if version is not None:
        data["version"] = version
    return data, parsed


def _validated(data: dict[str, Any]) -> PluginManifest:
    try:
        return parse_manifest(data, source="plugin manifest")
    except SpecError as exc:
        hint = " (fix --name/--version or the template)"
        raise FledgeError(f"the generated plugin manifest is invalid{hint}:\n{exc}") from None


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
    data, _ = _base(template, default_name, name, version, "an initramfs")
    data["initramfs"] = {
        "url": str(artifact.resolve()),
        "checksum": f"sha256:{sha256}",
        "format": INITRAMFS_FORMATS[compression],
    }
    data["rootfs"] = None
    return _validated(data)


def rootfs_manifest(
    *,
    artifact: Path,
    sha256: str,
    fstype: str,
    image: ImageRuntime,
    image_source: str,
    image_digest: str,
    template: Path | None,
    default_name: str,
    name: str | None = None,
    version: str | None = None,
) -> PluginManifest:
    """The manifest for the root disk at ``artifact`` built from ``image_source``.

    The template's ``[workload]`` wins over the image config field by field (see
    :func:`fledge.rootfs.imageconfig.merge_workload`); its ``network.expose``, when given
    (even empty), replaces the image's exposed ports."""
    data, parsed = _base(template, default_name, name, version, "a root disk")
    given: dict[str, Any] | None = None
    if parsed is not None and parsed.workload is not None:
        dumped = parsed.workload.model_dump(mode="json")
        given = {key: dumped[key] for key in parsed.workload.model_fields_set}
        if parsed.workload.env:
            given["env"] = dumped["env"]
    data["workload"] = merge_workload(image, given)
    network = parsed.network if parsed is not None else None
    if network is None:
        if image.exposed:
            data["network"] = {"mode": "user", "expose": expose_entries(image)}
    elif "expose" not in network.model_fields_set:
        data["network"]["expose"] = expose_entries(image)
    data["image"] = image_source
    data["image_digest"] = image_digest
    data["initramfs"] = None
    data["rootfs"] = {
        "url": str(artifact.resolve()),
        "checksum": f"sha256:{sha256}",
        "format": "raw",
        "fstype": fstype,
    }
    return _validated(data)
