"""OCI images made by the tests themselves, and ways to publish them.

Build layers from tar entries (``Entry``) or directory trees, then images (``build_image``)
and multi-arch indexes (``build_index``), in OCI or Docker schema 2 media types; publish them
with ``push`` (v2 API, monolithic or chunked uploads), ``write_oci_layout`` or
``write_docker_archive`` (classic ``manifest.json`` form or the Docker 25+ form with an OCI
layout inside). Everything is deterministic: same inputs, same digests.

Ready-made images (each a few MB at most, cached per process):

- ``busybox_image()``: static host busybox with applet links, a web root, a non-root user;
  serves ``/www`` on 8080 (see BUSYBOX_* constants).
- ``glibc_image(workdir)``: a tiny C HTTP server built with the host gcc against glibc, with
  its ELF closure (ld-linux, libc.so.6).
- ``whiteout_image()``: three layers (none/gzip/zstd) with whiteouts, an opaque dir, a
  hardlink, a symlink and an xattr; ``WHITEOUT_EXPECTED`` is the tree they apply to.
- ``multiarch_index()``: linux/amd64 (the busybox image), linux/arm64/v8 and linux/arm/v7
  (tiny images with an ``/etc/arch`` marker).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import zstandard

from fledge.elf import elf_interpreter

Compression = Literal["none", "gzip", "zstd"]
MediaTypes = Literal["oci", "docker"]

MTIME = 1_700_000_000
"""The mtime of every entry unless given (2023-11-14)."""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES: dict[MediaTypes, dict[Compression, str]] = {
    "oci": {
        "none": "application/vnd.oci.image.layer.v1.tar",
        "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
        "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    },
    "docker": {
        "none": "application/vnd.docker.image.rootfs.diff.tar",
        "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd",
    },
}
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- layers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tar entry of a layer. Paths are relative to the root (a leading / is dropped)."""

    path: str
    kind: Literal["file", "dir", "symlink", "hardlink", "fifo", "char", "block"] = "file"
    data: bytes = b""
    mode: int | None = None
    """Permission bits (with setuid/sticky); default 0644 files, 0755 dirs, 0777 links."""
    uid: int = 0
    gid: int = 0
    target: str = ""
    """Symlink target as written, or the hardlink's target path inside the layer."""
    xattrs: Mapping[str, str] = field(default_factory=dict)
    """Extended attributes (``user.*``, ``security.capability`` …) as PAX SCHILY.xattr."""
    devmajor: int = 0
    devminor: int = 0
    mtime: int = MTIME

    @classmethod
    def file(cls, path: str, data: bytes | str, mode: int = 0o644, **extra: Any) -> Entry:
        content = data.encode() if isinstance(data, str) else data
        return cls(path, "file", content, mode, **extra)

    @classmethod
    def dir(cls, path: str, mode: int = 0o755, **extra: Any) -> Entry:
        return cls(path, "dir", mode=mode, **extra)

    @classmethod
    def symlink(cls, path: str, target: str, **extra: Any) -> Entry:
        return cls(path, "symlink", target=target, **extra)

    @classmethod
    def hardlink(cls, path: str, target: str, **extra: Any) -> Entry:
        return cls(path, "hardlink", target=target, **extra)

    @classmethod
    def whiteout(cls, path: str) -> Entry:
        """Deletes ``path`` from the layers below (``dir/.wh.name``)."""
        parent, _, name = path.strip("/").rpartition("/")
        return cls.file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", b"")

    @classmethod
    def opaque(cls, directory: str) -> Entry:
        """Hides everything the layers below put in ``directory`` (``.wh..wh..opq``)."""
        return cls.file(f"{directory.strip('/')}/.wh..wh..opq", b"")


_KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
}
_DEFAULT_MODES = {"dir": 0o755, "symlink": 0o777}


def tar_bytes(entries: Iterable[Entry]) -> bytes:
    """A PAX tar of ``entries`` in the given order (so tests control what comes first)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path.lstrip("/") or ".")
            info.type = _KINDS[entry.kind]
            info.mode = (
                entry.mode if entry.mode is not None else _DEFAULT_MODES.get(entry.kind, 0o644)
            )
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""
            info.mtime = entry.mtime
            info.linkname = entry.target.lstrip("/") if entry.kind == "hardlink" else entry.target
            info.devmajor, info.devminor = entry.devmajor, entry.devminor
            if entry.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs.items()}
            if entry.kind == "file":
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def tree_entries(root: Path, *, prefix: str = "", uid: int = 0, gid: int = 0) -> list[Entry]:
    """Entries for a directory tree (sorted; modes, symlinks and file contents kept;
    ownership set to ``uid``/``gid``), placed under ``prefix`` in the layer."""
    entries: list[Entry] = []
    base = prefix.strip("/")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        name = f"{base}/{rel}" if base else rel
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if path.is_symlink():
            entries.append(Entry.symlink(name, os.readlink(path), uid=uid, gid=gid))
        elif path.is_dir():
            entries.append(Entry.dir(name, mode, uid=uid, gid=gid))
        elif path.is_file():
            entries.append(Entry.file(name, path.read_bytes(), mode, uid=uid, gid=gid))
    return entries


def compress(data: bytes, compression: Compression) -> bytes:
    """Deterministic gzip (mtime 0) or zstd of ``data``."""
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


@dataclass(frozen=True)
class Blob:
    """Content with its media type."""

    media_type: str
    data: bytes = field(repr=False)

    @functools.cached_property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Layer:
    """A layer: the uncompressed tar (its sha256 is the config's diff_id) and the blob."""

    tar: bytes = field(repr=False)
    blob: Blob
    compression: Compression

    @property
    def diff_id(self) -> str:
        return sha256(self.tar)


def make_layer(
    content: Sequence[Entry] | Path | bytes,
    *,
    compression: Compression = "gzip",
    media: MediaTypes = "oci",
) -> Layer:
    """A layer from entries, a directory tree or a ready tar."""
    if isinstance(content, bytes):
        tar = content
    elif isinstance(content, Path):
        tar = tar_bytes(tree_entries(content))
    else:
        tar = tar_bytes(content)
    return Layer(
        tar, Blob(LAYER_TYPES[media][compression], compress(tar, compression)), compression
    )


# --- images and indexes --------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An image: manifest, config and layers (manifest digest = ``digest``)."""

    manifest: Blob
    config: Blob
    layers: tuple[Layer, ...]
    platform: str
    media: MediaTypes = "oci"

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def config_json(self) -> dict[str, Any]:
        return json.loads(self.config.data)

    def blobs(self) -> list[Blob]:
        """Config and layer blobs (what a registry needs before the manifest)."""
        return [self.config, *(layer.blob for layer in self.layers)]

    def recompressed(self, compression: Compression, media: MediaTypes | None = None) -> Image:
        """The same image (same config, same diff_ids) with its layers compressed anew."""
        kind = media or self.media
        layers = [
            make_layer(layer.tar, compression=compression, media=kind) for layer in self.layers
        ]
        return _assemble(self.config, layers, self.platform, kind)


@dataclass(frozen=True)
class Index:
    """A multi-arch index (OCI) or manifest list (Docker) over ``images``."""

    manifest: Blob
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def image_for(self, platform: str) -> Image:
        return next(image for image in self.images if image.platform == platform)


def _platform_json(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    value = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        value["variant"] = parts[2]
    return value


def _assemble(config: Blob, layers: Sequence[Layer], platform: str, media: MediaTypes) -> Image:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if media == "oci" else DOCKER_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }
    manifest = Blob(document["mediaType"], json.dumps(document, indent=2).encode())
    return Image(manifest, config, tuple(layers), platform, media)


def build_image(
    layers: Sequence[Layer | Sequence[Entry]],
    *,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    working_dir: str | None = None,
    user: str | None = None,
    exposed_ports: Sequence[str] = (),
    stop_signal: str | None = None,
    labels: Mapping[str, str] | None = None,
    platform: str = "linux/amd64",
    media: MediaTypes = "oci",
    compression: Compression = "gzip",
) -> Image:
    """An image from layers (or entry lists, made into ``compression`` layers) and the
    runtime config (``exposed_ports`` like ``"8080/tcp"``)."""
    built = [
        layer
        if isinstance(layer, Layer)
        else make_layer(layer, compression=compression, media=media)
        for layer in layers
    ]
    runtime: dict[str, Any] = {}
    if entrypoint is not None:
        runtime["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        runtime["Cmd"] = list(cmd)
    if env:
        runtime["Env"] = [f"{key}={value}" for key, value in env.items()]
    if working_dir:
        runtime["WorkingDir"] = working_dir
    if user:
        runtime["User"] = user
    if exposed_ports:
        runtime["ExposedPorts"] = {port: {} for port in exposed_ports}
    if stop_signal:
        runtime["StopSignal"] = stop_signal
    if labels:
        runtime["Labels"] = dict(labels)
    config = {
        "created": "2023-11-14T22:13:20Z",
        **_platform_json(platform),
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in built]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "fledge tests"}] * len(built),
    }
    config_blob = Blob(
        OCI_CONFIG if media == "oci" else DOCKER_CONFIG, json.dumps(config, indent=2).encode()
    )
    return _assemble(config_blob, built, platform, media)


def build_index(
    images: Sequence[Image],
    *,
    media: MediaTypes = "oci",
    extra: Sequence[dict[str, Any]] = (),
) -> Index:
    """An index over ``images`` (platforms from each); ``extra`` entries are added as-is
    (an ``unknown/unknown`` attestation, say)."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX if media == "oci" else DOCKER_LIST,
        "manifests": [
            image.manifest.descriptor(platform=_platform_json(image.platform)) for image in images
        ]
        + list(extra),
    }
    return Index(
        Blob(document["mediaType"], json.dumps(document, indent=2).encode()), tuple(images)
    )


# --- publishing ----------------------------------------------------------------------------


def _upload(client: httpx.Client, repository: str, blob: Blob, *, chunked: bool) -> None:
    head = client.head(f"/v2/{repository}/blobs/{blob.digest}")
    if head.status_code == 200:
        return
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    started.raise_for_status()
    location = started.headers["location"]
    if chunked and blob.size:
        step = max(1, -(-blob.size // 3))
        for start in range(0, blob.size, step):
            chunk = blob.data[start : start + step]
            patched = client.patch(
                location,
                content=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{start + len(chunk) - 1}",
                },
            )
            patched.raise_for_status()
            location = patched.headers["location"]
        done = client.put(httpx.URL(location).copy_merge_params({"digest": blob.digest}))
    else:
        done = client.put(
            httpx.URL(location).copy_merge_params({"digest": blob.digest}),
            content=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
    done.raise_for_status()


def _put_manifest(client: httpx.Client, repository: str, manifest: Blob, reference: str) -> None:
    response = client.put(
        f"/v2/{repository}/manifests/{reference}",
        content=manifest.data,
        headers={"Content-Type": manifest.media_type},
    )
    if response.status_code >= 400:
        raise RuntimeError(
            f"pushing {repository}:{reference} failed: {response.status_code} {response.text}"
        )


def push(
    client: httpx.Client,
    repository: str,
    image: Image | Index,
    *,
    tag: str | None = "latest",
    chunked: bool = False,
) -> str:
    """Push over the v2 API with ``client`` (base_url = the registry, already able to
    authenticate for push); an index pushes its images by digest first. Returns the digest
    of what ``tag`` now names."""
    images = image.images if isinstance(image, Index) else (image,)
    for each in images:
        for blob in each.blobs():
            _upload(client, repository, blob, chunked=chunked)
        if isinstance(image, Index) or tag is None:
            _put_manifest(client, repository, each.manifest, each.digest)
    if isinstance(image, Index):
        _put_manifest(client, repository, image.manifest, tag or image.digest)
    elif tag is not None:
        _put_manifest(client, repository, image.manifest, tag)
    return image.digest


def _write_blob(root: Path, blob: Blob) -> None:
    path = root / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob.data)


def write_oci_layout(
    path: Path, images: Mapping[str | None, Image | Index], *, annotate_platforms: bool = False
) -> Path:
    """An OCI layout at ``path`` holding ``images`` keyed by tag (``org.opencontainers.image.
    ref.name``; None: untagged). An Index is written as a nested index entry without a
    platform, as skopeo and buildx do; ``annotate_platforms`` instead lists its images
    directly in index.json, each with its platform."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entries: list[dict[str, Any]] = []
    for tag, item in images.items():
        annotations = {"annotations": {REF_NAME: tag}} if tag else {}
        members = item.images if isinstance(item, Index) else (item,)
        for image in members:
            for blob in (image.manifest, *image.blobs()):
                _write_blob(path, blob)
        if isinstance(item, Index) and annotate_platforms:
            entries += [
                image.manifest.descriptor(platform=_platform_json(image.platform), **annotations)
                for image in item.images
            ]
            continue
        _write_blob(path, item.manifest)
        entries.append(item.manifest.descriptor(**annotations))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    (path / "index.json").write_text(json.dumps(index, indent=2))
    return path


def write_docker_archive(
    path: Path,
    image: Image,
    *,
    repo_tags: Sequence[str] = ("fledge-test/image:latest",),
    oci_layout: bool = False,
    compressed_layers: bool = False,
) -> Path:
    """A ``docker save`` tar of ``image``: the classic form (``<id>/layer.tar``,
    ``<config hex>.json``, ``manifest.json``, ``repositories``), or with ``oci_layout`` the
    Docker 25+ form (an OCI layout with uncompressed layers plus ``manifest.json``).
    ``compressed_layers`` stores the classic form's layers gzipped (docker load takes those)."""
    files: dict[str, bytes] = {}
    if oci_layout:
        flat = image.recompressed("none", "oci")
        tag = repo_tags[0].rpartition(":")[2] if repo_tags else None
        for blob in (flat.manifest, *flat.blobs()):
            files[f"blobs/sha256/{blob.digest.removeprefix('sha256:')}"] = blob.data
        annotations = (
            {REF_NAME: tag, "io.containerd.image.name": f"docker.io/{repo_tags[0]}"} if tag else {}
        )
        descriptor = flat.manifest.descriptor(
            **({"annotations": annotations} if annotations else {})
        )
        files["index.json"] = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
        ).encode()
        files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
        config_name = f"blobs/sha256/{flat.config.digest.removeprefix('sha256:')}"
        layer_names = [
            f"blobs/sha256/{layer.blob.digest.removeprefix('sha256:')}" for layer in flat.layers
        ]
    else:
        config_name = f"{image.config.digest.removeprefix('sha256:')}.json"
        files[config_name] = image.config.data
        layer_names = []
        parent = ""
        for layer in image.layers:
            layer_id = hashlib.sha256(f"{parent}{layer.diff_id}".encode()).hexdigest()
            parent = layer_id
            files[f"{layer_id}/VERSION"] = b"1.0"
            files[f"{layer_id}/json"] = json.dumps({"id": layer_id}).encode()
            files[f"{layer_id}/layer.tar"] = (
                compress(layer.tar, "gzip") if compressed_layers else layer.tar
            )
            layer_names.append(f"{layer_id}/layer.tar")
        files["repositories"] = json.dumps(
            {t.rpartition(":")[0]: {t.rpartition(":")[2]: parent} for t in repo_tags}
        ).encode()
    files["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": list(repo_tags), "Layers": layer_names}]
    ).encode()
    entries = [Entry.file(name, data) for name, data in sorted(files.items())]
    path.write_bytes(tar_bytes(entries))
    return path


# --- ready-made images ---------------------------------------------------------------------

BUSYBOX = Path("/usr/bin/busybox")
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "id", "httpd", "wget", "sleep", "ps", "env")
BUSYBOX_INDEX_HTML = "<h1>hello from the busybox image</h1>\n"
BUSYBOX_ENTRYPOINT = ["/bin/busybox", "httpd", "-f"]
BUSYBOX_CMD = ["-p", "8080", "-h", "/www"]
BUSYBOX_USER = "1000:1000"
BUSYBOX_OWNED_FILE = "home/app/owned.txt"
"""A file owned by 1000:1000, mode 0640."""


def _busybox_binary() -> bytes:
    if not BUSYBOX.is_file() or elf_interpreter(BUSYBOX) is not None:
        raise RuntimeError("a static /usr/bin/busybox is required: apt-get install busybox-static")
    return BUSYBOX.read_bytes()


@functools.cache
def busybox_image(*, media: MediaTypes = "oci", compression: Compression = "gzip") -> Image:
    """Static busybox: ``/bin/busybox`` with applet symlinks in /bin, /etc/passwd and
    /etc/group with ``app`` (1000:1000), ``/home/app`` owned by it, ``/tmp`` 1777, and a web
    root ``/www/index.html`` (BUSYBOX_INDEX_HTML) in a second layer. Entrypoint
    ``/bin/busybox httpd -f``, Cmd ``-p 8080 -h /www``, User 1000:1000, WorkingDir /www,
    Env PATH and GREETING=hello, ExposedPorts 8080/tcp, StopSignal SIGTERM."""
    base = [
        Entry.dir("bin"),
        Entry.file("bin/busybox", _busybox_binary(), 0o755),
        *(Entry.symlink(f"bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS),
        Entry.dir("etc"),
        Entry.file(
            "etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
        ),
        Entry.file("etc/group", "root:x:0:\napp:x:1000:\n"),
        Entry.dir("home"),
        Entry.dir("home/app", 0o750, uid=1000, gid=1000),
        Entry.file(BUSYBOX_OWNED_FILE, "mine\n", 0o640, uid=1000, gid=1000),
        Entry.dir("root", 0o700),
        Entry.dir("tmp", 0o1777),
    ]
    web = [Entry.dir("www"), Entry.file("www/index.html", BUSYBOX_INDEX_HTML)]
    return build_image(
        [base, web],
        entrypoint=BUSYBOX_ENTRYPOINT,
        cmd=BUSYBOX_CMD,
        env={
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "GREETING": "hello",
        },
        working_dir="/www",
        user=BUSYBOX_USER,
        exposed_ports=["8080/tcp"],
        stop_signal="SIGTERM",
        media=media,
        compression=compression,
    )


GLIBC_SERVER_PATH = "usr/local/bin/hello-httpd"
GLIBC_GREETING = "hello from glibc"
_GLIBC_SERVER_C = r"""
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    const char *greeting = getenv("GREETING");
    if (!greeting) greeting = "hello";
    int server = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(server, (struct sockaddr *)&address, sizeof address) || listen(server, 16)) {
        perror("hello-httpd");
        return 1;
    }
    printf("hello-httpd: listening on %d\n", port);
    fflush(stdout);
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client < 0) continue;
        char request[2048];
        (void)read(client, request, sizeof request);
        char reply[512];
        int body = (int)strlen(greeting) + 1;
        int size = snprintf(reply, sizeof reply,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s\n",
            body, greeting);
        (void)write(client, reply, (size_t)size);
        close(client);
    }
}
"""


def elf_closure(executable: Path) -> list[Path]:
    """The program interpreter and shared libraries ``executable`` loads (from ``ldd``)."""
    output = subprocess.run(
        ["ldd", str(executable)], capture_output=True, text=True, check=True
    ).stdout
    found: list[Path] = []
    for line in output.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            candidate = words[words.index("=>") + 1]
        elif words and words[0].startswith("/"):
            candidate = words[0]
        else:
            continue
        if candidate.startswith("/"):
            found.append(Path(candidate))
    return found


def glibc_image(workdir: Path, *, media: MediaTypes = "oci") -> Image:
    """A dynamically linked C HTTP server (``/usr/local/bin/hello-httpd [PORT]``, answers
    ``$GREETING``) with its ELF closure at the host's paths, links included. Compiled with the
    host gcc into ``workdir``. Entrypoint the server, Cmd ``8080``, Env
    GREETING=GLIBC_GREETING, ExposedPorts 8080/tcp."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "hello-httpd.c"
    binary = workdir / "hello-httpd"
    source.write_text(_GLIBC_SERVER_C)
    subprocess.run(["gcc", "-O2", "-s", "-o", str(binary), str(source)], check=True)
    interpreter = elf_interpreter(binary)
    assert interpreter, "gcc made a static binary"
    entries = [Entry.file(GLIBC_SERVER_PATH, binary.read_bytes(), 0o755)]
    dirs: set[str] = {"usr", "usr/local", "usr/local/bin", "tmp"}
    for library in {Path(interpreter), *elf_closure(binary)}:
        real = library.resolve()
        entries.append(Entry.file(real.as_posix(), real.read_bytes(), 0o755))
        if library.as_posix() != real.as_posix():
            entries.append(Entry.symlink(library.as_posix(), real.as_posix()))
        for path in (real, library):
            dirs.update(
                parent.as_posix().lstrip("/") for parent in path.parents if parent != Path("/")
            )
    layer = [Entry.dir(d, 0o1777 if d == "tmp" else 0o755) for d in sorted(dirs)] + sorted(
        entries, key=lambda e: e.path
    )
    return build_image(
        [layer],
        entrypoint=[f"/{GLIBC_SERVER_PATH}"],
        cmd=["8080"],
        env={"GREETING": GLIBC_GREETING},
        exposed_ports=["8080/tcp"],
        media=media,
    )


WHITEOUT_EXPECTED: dict[str, str | None] = {
    "etc/keep": "kept\n",
    "etc/remove-me": None,
    "data/old/a.txt": None,
    "data/old/b.txt": None,
    "data/old/new.txt": "after the opaque dir\n",
    "opt/gone": None,
    "opt/stays": "still here\n",
    "srv/original": "linked\n",
    "srv/hardlink": "linked\n",
    "srv/symlink": "->original",
    "srv/xattr": "has an xattr\n",
}
"""After applying whiteout_image(): path → content; None: must not exist; ``->T``: a
symlink to T. ``srv/hardlink`` shares its inode with ``srv/original``; ``srv/xattr`` has
``user.fledge=test``."""


@functools.cache
def whiteout_image(*, media: MediaTypes = "oci") -> Image:
    """Three layers, uncompressed, gzip and zstd: the base tree; a layer with whiteouts
    (``etc/.wh.remove-me``, ``opt/.wh.gone``) and an opaque ``data/old``; a layer with a
    hardlink, a symlink and an xattr. WHITEOUT_EXPECTED is the result."""
    base = [
        Entry.dir("etc"),
        Entry.file("etc/keep", "kept\n"),
        Entry.file("etc/remove-me", "doomed\n"),
        Entry.dir("data"),
        Entry.dir("data/old"),
        Entry.file("data/old/a.txt", "a\n"),
        Entry.file("data/old/b.txt", "b\n"),
        Entry.dir("opt"),
        Entry.dir("opt/gone"),
        Entry.file("opt/gone/inside", "x\n"),
        Entry.file("opt/stays", "still here\n"),
    ]
    deletions = [
        Entry.dir("etc"),
        Entry.whiteout("etc/remove-me"),
        Entry.dir("data"),
        Entry.dir("data/old"),
        Entry.opaque("data/old"),
        Entry.file("data/old/new.txt", "after the opaque dir\n"),
        Entry.dir("opt"),
        Entry.whiteout("opt/gone"),
    ]
    links = [
        Entry.dir("srv"),
        Entry.file("srv/original", "linked\n"),
        Entry.hardlink("srv/hardlink", "srv/original"),
        Entry.symlink("srv/symlink", "original"),
        Entry.file("srv/xattr", "has an xattr\n", xattrs={"user.fledge": "test"}),
    ]
    layers = [
        make_layer(base, compression="none", media=media),
        make_layer(deletions, compression="gzip", media=media),
        make_layer(links, compression="zstd", media=media),
    ]
    return build_image(layers, cmd=["/bin/sh"], media=media)


ARCH_MARKER = "etc/arch"


@functools.cache
def marker_image(platform: str, *, media: MediaTypes = "oci") -> Image:
    """A one-file image for ``platform``: ``/etc/arch`` holds the platform string."""
    return build_image(
        [[Entry.dir("etc"), Entry.file(ARCH_MARKER, platform + "\n")]],
        cmd=["/bin/true"],
        platform=platform,
        media=media,
    )


@functools.cache
def multiarch_index(*, media: MediaTypes = "oci") -> Index:
    """linux/arm64/v8 and linux/arm/v7 marker images, then linux/amd64 (busybox_image()):
    amd64 is deliberately not first. The OCI form ends with an ``unknown/unknown`` entry
    like buildx's attestation manifests."""
    images = [
        marker_image("linux/arm64/v8", media=media),
        marker_image("linux/arm/v7", media=media),
        busybox_image(media=media),
    ]
    if media == "oci":
        images.append(marker_image("unknown/unknown"))
    return build_index(images, media=media)


def copy_tree(image_dir: Path, destination: Path) -> Path:
    """Copy an OCI layout (or any directory) so a test can damage the copy."""
    shutil.copytree(image_dir, destination, symlinks=True)
    return destination


__all__ = [
    "ARCH_MARKER",
    "BUSYBOX_CMD",
    "BUSYBOX_ENTRYPOINT",
    "BUSYBOX_INDEX_HTML",
    "BUSYBOX_OWNED_FILE",
    "BUSYBOX_USER",
    "GLIBC_GREETING",
    "GLIBC_SERVER_PATH",
    "WHITEOUT_EXPECTED",
    "Blob",
    "Entry",
    "Image",
    "Index",
    "Layer",
    "build_image",
    "build_index",
    "busybox_image",
    "glibc_image",
    "make_layer",
    "marker_image",
    "multiarch_index",
    "push",
    "tar_bytes",
    "tree_entries",
    "write_docker_archive",
    "write_oci_layout",
]
