"""Pulling OCI images with fledge.oci against a real docker-registry (open, htpasswd,
token, TLS) on 127.0.0.1, and from OCI layouts and docker save archives the tests write.

Requests are counted from the registry's own log (support.registry.Registry.requests).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from fledge.errors import FledgeError
from fledge.oci import PulledImage, fetch_image, resolve_digest
from fledge.oci.blobs import BlobCache
from pluginspec.fledge_config import ImageSource, parse_image_source
from support.oci_images import (
    ARCH_MARKER,
    BUSYBOX_CMD,
    BUSYBOX_ENTRYPOINT,
    BUSYBOX_USER,
    GLIBC_SERVER_PATH,
    Image,
    busybox_image,
    glibc_image,
    multiarch_index,
    whiteout_image,
    write_docker_archive,
    write_oci_layout,
)
from support.registry import PASSWORD, REFRESH_TOKEN, USERNAME, Registry

pytestmark = pytest.mark.integration


def source(text: str) -> ImageSource:
    """What fledge.toml's ``source.image`` becomes (pluginspec parses it)."""
    return parse_image_source(text)


def pull(registry: Registry, reference: str, cache: Path, **options: object) -> PulledImage:
    options.setdefault("creds", registry.creds)
    options.setdefault("insecure_http", registry.insecure_http)
    return fetch_image(source(reference), cache_dir=cache, **options)  # type: ignore[arg-type]


def assert_is(pulled: PulledImage, image: Image, cache: Path) -> None:
    """``pulled`` is exactly ``image``, its blobs verified in ``cache``."""
    assert pulled.manifest_digest == image.digest
    assert pulled.config_digest == image.config.digest
    assert pulled.config == image.config_json
    assert pulled.platform == image.platform.removesuffix("/v8")
    assert [(layer.digest, layer.media_type, layer.size) for layer in pulled.layers] == [
        (layer.blob.digest, layer.blob.media_type, layer.blob.size) for layer in image.layers
    ]
    for layer in pulled.layers:
        assert layer.path.parent == cache / "oci" / "blobs" / "sha256"
        assert "sha256:" + hashlib.sha256(layer.path.read_bytes()).hexdigest() == layer.digest


@pytest.fixture(scope="module")
def published(open_registry: Registry) -> Registry:
    """The open registry with the test images: busybox (OCI and Docker media types), the
    multi-arch index (both kinds), and the whiteout image (pushed in chunks)."""
    open_registry.push("fledge/busybox", busybox_image())
    open_registry.push("fledge/busybox-docker", busybox_image(media="docker"))
    open_registry.push("fledge/multi", multiarch_index(), tag="v1")
    open_registry.push("fledge/multi-docker", multiarch_index(media="docker"), tag="v1")
    open_registry.push("fledge/whiteouts", whiteout_image(), chunked=True)
    return open_registry


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# --- plain pulls ---------------------------------------------------------------------------


def test_an_image_is_pulled_with_its_config_and_verified_layers(
    published: Registry, cache: Path
) -> None:
    reference = published.reference("fledge/busybox")
    pulled = pull(published, reference, cache)
    assert_is(pulled, busybox_image(), cache)
    assert pulled.source == reference
    runtime = pulled.config["config"]
    assert runtime["Entrypoint"] == BUSYBOX_ENTRYPOINT and runtime["Cmd"] == BUSYBOX_CMD
    assert runtime["User"] == BUSYBOX_USER and runtime["ExposedPorts"] == {"8080/tcp": {}}
    assert runtime["WorkingDir"] == "/www" and runtime["StopSignal"] == "SIGTERM"
    assert "GREETING=hello" in runtime["Env"]


def test_docker_schema2_images_keep_their_media_types(published: Registry, cache: Path) -> None:
    pulled = pull(published, published.reference("fledge/busybox-docker"), cache)
    assert_is(pulled, busybox_image(media="docker"), cache)
    assert {layer.media_type for layer in pulled.layers} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }


def test_uncompressed_gzip_and_zstd_layers_come_back_in_order(
    published: Registry, cache: Path
) -> None:
    pulled = pull(published, published.reference("fledge/whiteouts"), cache)
    assert_is(pulled, whiteout_image(), cache)
    assert [layer.media_type.rpartition(".")[2] for layer in pulled.layers] == [
        "tar",
        "tar+gzip",
        "tar+zstd",
    ]


@pytest.mark.parametrize("media", ["oci", "docker"])
@pytest.mark.parametrize(
    ("platform", "expected"),
    [("linux/amd64", "linux/amd64"), ("linux/arm64", "linux/arm64/v8"), ("linux/arm/v7", None)],
)
def test_the_requested_platform_is_chosen_from_an_index(
    published: Registry, cache: Path, media: str, platform: str, expected: str | None
) -> None:
    repository = "fledge/multi" if media == "oci" else "fledge/multi-docker"
    index = multiarch_index(media=media)  # type: ignore[arg-type]
    pulled = pull(published, published.reference(repository, "v1"), cache, platform=platform)
    image = index.image_for(expected or platform)
    assert_is(pulled, image, cache)
    if platform != "linux/amd64":
        with tarfile.open(pulled.layers[0].path) as tar:
            marker = tar.extractfile(ARCH_MARKER)
            assert marker is not None and marker.read().decode().strip() == image.platform


def test_a_platform_the_index_lacks_is_an_error_listing_what_it_has(
    published: Registry, cache: Path
) -> None:
    with pytest.raises(FledgeError) as caught:
        pull(published, published.reference("fledge/multi", "v1"), cache, platform="linux/s390x")
    message = str(caught.value)
    assert "linux/s390x" in message and published.reference("fledge/multi", "v1") in message
    assert "linux/amd64, linux/arm/v7, linux/arm64" in message
    assert "unknown" not in message


def test_a_single_platform_image_for_another_platform_is_refused(
    published: Registry, cache: Path
) -> None:
    with pytest.raises(FledgeError, match="built for linux/amd64, not linux/arm64"):
        pull(published, published.reference("fledge/busybox"), cache, platform="linux/arm64")


def test_missing_tags_and_repositories_are_named(published: Registry, cache: Path) -> None:
    with pytest.raises(FledgeError, match="has no manifest nope in fledge/busybox"):
        pull(published, published.reference("fledge/busybox", "nope"), cache)
    absent = published.reference("fledge/absent")
    with pytest.raises(FledgeError, match=f"image {absent} not found: registry {published.url}"):
        pull(published, absent, cache)


# --- digests and the cache -----------------------------------------------------------------


def test_pinning_by_digest(published: Registry, cache: Path) -> None:
    image, index = busybox_image(), multiarch_index()
    pinned = pull(published, published.reference("fledge/busybox", None, image.digest), cache)
    assert pinned.manifest_digest == image.digest
    by_index = pull(published, published.reference("fledge/multi", "v1", index.digest), cache)
    assert by_index.manifest_digest == image.digest  # the amd64 manifest, not the index
    wrong = "sha256:" + hashlib.sha256(b"another image").hexdigest()
    with pytest.raises(FledgeError, match=f"has no manifest {wrong}"):
        pull(published, published.reference("fledge/busybox", "latest", wrong), cache)


def test_a_second_pull_downloads_no_blobs(published: Registry, cache: Path) -> None:
    reference = published.reference("fledge/multi", "v1")
    first = pull(published, reference, cache)
    mark = published.mark()
    again = pull(published, reference, cache)
    assert again == first
    assert published.blob_gets(mark) == []
    assert [(r.method, r.uri) for r in published.requests(mark)] == [
        ("GET", "/v2/fledge/multi/manifests/v1")
    ]


def test_a_pinned_image_in_the_cache_needs_no_registry(published: Registry, cache: Path) -> None:
    reference = published.reference("fledge/multi", None, multiarch_index().digest)
    pull(published, reference, cache)
    mark = published.mark()
    assert pull(published, reference, cache).manifest_digest == busybox_image().digest
    assert published.requests(mark) == []


def test_resolve_digest_fetches_no_blobs(published: Registry, cache: Path) -> None:
    mark = published.mark()
    for reference, platform, expected in [
        (published.reference("fledge/multi", "v1"), "linux/amd64", busybox_image().digest),
        (
            published.reference("fledge/multi", "v1"),
            "linux/arm64",
            multiarch_index().image_for("linux/arm64/v8").digest,
        ),
        (published.reference("fledge/busybox"), "linux/amd64", busybox_image().digest),
    ]:
        digest = resolve_digest(
            source(reference), cache_dir=cache, platform=platform, insecure_http=True
        )
        assert digest == expected
    assert published.blob_gets(mark) == []


def test_a_corrupted_cached_blob_is_detected_and_fetched_again(
    published: Registry, cache: Path
) -> None:
    reference = published.reference("fledge/busybox")
    layer = pull(published, reference, cache).layers[0]
    data = bytearray(layer.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.path.write_bytes(bytes(data))
    mark = published.mark()
    again = pull(published, reference, cache)
    assert_is(again, busybox_image(), cache)
    assert [(r.uri.rpartition("/")[2], r.status) for r in published.blob_gets(mark)] == [
        (layer.digest, 200)
    ]


def test_an_interrupted_download_resumes_with_a_range_request(
    published: Registry, cache: Path
) -> None:
    blob = busybox_image().layers[0].blob
    blobs = BlobCache(cache)
    blobs.root.mkdir(parents=True)
    blobs.partial_path(blob.digest).write_bytes(blob.data[:400_000])
    mark = published.mark()
    pulled = pull(published, published.reference("fledge/busybox"), cache)
    assert_is(pulled, busybox_image(), cache)
    gets = [r for r in published.blob_gets(mark) if blob.digest in r.uri]
    assert [(r.status, r.written) for r in gets] == [(206, blob.size - 400_000)]
    assert not blobs.partial_path(blob.digest).exists()


def test_a_bad_partial_download_is_thrown_away_and_fetched_whole(
    published: Registry, cache: Path
) -> None:
    blob = busybox_image().layers[0].blob
    blobs = BlobCache(cache)
    blobs.root.mkdir(parents=True)
    blobs.partial_path(blob.digest).write_bytes(b"\0" * 400_000)
    notes: list[str] = []

    class Progress:
        def step(self, title: str) -> None:
            pass

        def note(self, message: str) -> None:
            notes.append(message)

    mark = published.mark()
    pulled = pull(published, published.reference("fledge/busybox"), cache, progress=Progress())
    assert_is(pulled, busybox_image(), cache)
    gets = [r.status for r in published.blob_gets(mark) if blob.digest in r.uri]
    assert gets == [206, 200]
    assert any("from the start" in note for note in notes)


def test_byte_progress_reaches_every_layer_total(published: Registry, cache: Path) -> None:
    seen: dict[str, tuple[int, int | None]] = {}
    lock = threading.Lock()

    class Progress:
        def step(self, title: str) -> None:
            pass

        def note(self, message: str) -> None:
            pass

        def transfer(self, blob: str, done: int, total: int | None) -> None:
            with lock:
                seen[blob] = (done, total)

    pulled = pull(published, published.reference("fledge/whiteouts"), cache, progress=Progress())
    assert seen == {layer.digest[:19]: (layer.size, layer.size) for layer in pulled.layers}


def test_concurrent_pulls_share_one_cache(published: Registry, cache: Path) -> None:
    results: list[PulledImage | BaseException] = []

    def work() -> None:
        try:
            results.append(pull(published, published.reference("fledge/busybox"), cache))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and all(isinstance(r, PulledImage) for r in results)
    blobs = sorted(p.name for p in (cache / "oci" / "blobs" / "sha256").iterdir())
    assert not [name for name in blobs if name.endswith(".partial") or name.startswith(".")]


# --- authentication ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic(basic_registry: Registry) -> Registry:
    basic_registry.push("private/busybox", busybox_image())
    return basic_registry


@pytest.fixture(scope="module")
def token(token_registry: Registry) -> Registry:
    token_registry.push("private/multi", multiarch_index(), tag="v1")
    return token_registry


def test_basic_auth_with_creds(basic: Registry, cache: Path) -> None:
    assert_is(pull(basic, basic.reference("private/busybox"), cache), busybox_image(), cache)


def test_basic_auth_with_a_wrong_password_says_so(basic: Registry, cache: Path) -> None:
    with pytest.raises(FledgeError) as caught:
        pull(basic, basic.reference("private/busybox"), cache, creds=f"{USERNAME}:wrong")
    assert str(caught.value) == (
        f"registry {basic.url} refused the credentials for private/busybox (from --creds): "
        "pass --creds USER:PASS or log in with docker login"
    )


def test_basic_auth_without_creds_asks_for_them(
    basic: Registry, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    with pytest.raises(FledgeError, match=r"needs credentials for private/busybox.*--creds"):
        pull(basic, basic.reference("private/busybox"), cache, creds=None)


def test_docker_config_json_credentials_are_used(
    basic: Registry, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "docker"
    folder.mkdir()
    entry = {"auth": base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()}
    (folder / "config.json").write_text(json.dumps({"auths": {f"http://{basic.host}": entry}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    pulled = pull(basic, basic.reference("private/busybox"), cache, creds=None)
    assert pulled.manifest_digest == busybox_image().digest


@pytest.mark.parametrize("field", ["token", "access_token"])
def test_token_auth_fetches_one_token_per_pull(token: Registry, cache: Path, field: str) -> None:
    assert token.token_server is not None
    token.token_server.token_field = field  # type: ignore[assignment]
    before = len(token.token_server.requests)
    try:
        pulled = pull(token, token.reference("private/multi", "v1"), cache)
    finally:
        token.token_server.token_field = "token"
    assert_is(pulled, busybox_image(), cache)
    asked = token.token_server.requests[before:]
    assert [(r.method, r.user, r.status) for r in asked] == [("GET", USERNAME, 200)]
    assert asked[0].params["scope"] == ["repository:private/multi:pull"]


def test_token_auth_with_a_wrong_password_says_so(token: Registry, cache: Path) -> None:
    with pytest.raises(FledgeError) as caught:
        pull(token, token.reference("private/multi", "v1"), cache, creds=f"{USERNAME}:nope")
    message = str(caught.value)
    assert f"registry {token.url} refused the credentials for private/multi" in message
    assert "--creds USER:PASS" in message and "docker login" in message


def test_token_auth_without_creds_asks_for_them(
    token: Registry, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    with pytest.raises(FledgeError, match="needs credentials for private/multi"):
        pull(token, token.reference("private/multi", "v1"), cache, creds=None)


def test_an_identity_token_from_docker_config_is_exchanged(
    token: Registry, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert token.token_server is not None
    folder = tmp_path / "docker"
    folder.mkdir()
    auths = {token.host: {"auth": "", "identitytoken": REFRESH_TOKEN}}
    (folder / "config.json").write_text(json.dumps({"auths": auths}))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    before = len(token.token_server.requests)
    pulled = pull(token, token.reference("private/multi", "v1"), cache, creds=None)
    assert pulled.manifest_digest == busybox_image().digest
    asked = token.token_server.requests[before:]
    assert [(r.method, r.params.get("grant_type")) for r in asked] == [("POST", ["refresh_token"])]


# --- HTTPS and plain HTTP ------------------------------------------------------------------


def test_plain_http_registries_need_insecure_http(published: Registry, cache: Path) -> None:
    with pytest.raises(FledgeError) as caught:
        pull(published, published.reference("fledge/busybox"), cache, insecure_http=False)
    message = str(caught.value)
    assert f"https://{published.host}" in message and "--insecure-http" in message


def test_https_is_the_default_and_checks_certificates(
    tls_registry: Registry, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_registry.push("fledge/busybox", busybox_image())
    reference = tls_registry.reference("fledge/busybox")
    with pytest.raises(FledgeError) as caught:
        fetch_image(source(reference), cache_dir=cache)
    assert f"TLS connection to registry {tls_registry.url} failed" in str(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_cert))
    assert_is(fetch_image(source(reference), cache_dir=cache), busybox_image(), cache)
    with pytest.raises(FledgeError, match="speaks HTTPS: drop --insecure-http"):
        fetch_image(source(reference), cache_dir=cache, insecure_http=True)


# --- OCI layouts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout with ``busybox`` (a manifest), ``multi`` (a nested index) and
    ``whiteouts``."""
    return write_oci_layout(
        tmp_path_factory.mktemp("layout") / "images",
        {"busybox": busybox_image(), "multi": multiarch_index(), "whiteouts": whiteout_image()},
    )


def test_an_oci_layout_image_is_read_by_tag(layout: Path, cache: Path) -> None:
    pulled = fetch_image(source(f"oci-layout:{layout}:busybox"), cache_dir=cache)
    assert_is(pulled, busybox_image(), cache)
    assert pulled.source == f"oci-layout:{layout}:busybox"


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64/v8"])
def test_an_oci_layout_index_is_resolved_by_platform(
    layout: Path, cache: Path, platform: str
) -> None:
    pulled = fetch_image(source(f"oci-layout:{layout}:multi"), cache_dir=cache, platform=platform)
    assert_is(pulled, multiarch_index().image_for(platform), cache)


def test_a_layout_listing_platforms_directly_is_resolved_too(tmp_path: Path, cache: Path) -> None:
    flat = write_oci_layout(tmp_path / "flat", {None: multiarch_index()}, annotate_platforms=True)
    pulled = fetch_image(source(f"oci-layout:{flat}"), cache_dir=cache, platform="linux/arm/v7")
    assert_is(pulled, multiarch_index().image_for("linux/arm/v7"), cache)
    assert resolve_digest(source(f"oci-layout:{flat}"), cache_dir=cache) == busybox_image().digest


def test_layout_tags_must_exist_and_be_named_when_several(layout: Path, cache: Path) -> None:
    with pytest.raises(FledgeError, match=r"no image tagged 'nope' \(tags: busybox, multi, "):
        fetch_image(source(f"oci-layout:{layout}:nope"), cache_dir=cache)
    with pytest.raises(FledgeError, match=r"several images .* oci-layout:PATH:TAG"):
        fetch_image(source(f"oci-layout:{layout}"), cache_dir=cache)
    with pytest.raises(FledgeError, match="does not exist"):
        fetch_image(source(f"oci-layout:{layout}-missing"), cache_dir=cache)


def test_a_damaged_layout_blob_is_refused_by_digest(tmp_path: Path, cache: Path) -> None:
    image = busybox_image()
    damaged = write_oci_layout(tmp_path / "damaged", {"latest": image})
    blob = damaged / "blobs" / "sha256" / image.layers[1].blob.digest.removeprefix("sha256:")
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    with pytest.raises(FledgeError) as caught:
        fetch_image(source(f"oci-layout:{damaged}:latest"), cache_dir=cache)
    message = str(caught.value)
    assert str(damaged) in message and image.layers[1].blob.digest in message
    assert "got:      sha256:" in message
    assert not [p for p in (cache / "oci" / "blobs" / "sha256").iterdir() if "ingest" in p.name]
    blob.unlink()
    with pytest.raises(FledgeError, match=f"lacks blob {image.layers[1].blob.digest}"):
        fetch_image(source(f"oci-layout:{damaged}:latest"), cache_dir=cache)


# --- docker save archives ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["classic", "classic-gzip", "oci"])
def test_docker_save_archives_are_read(tmp_path: Path, cache: Path, form: str) -> None:
    image = busybox_image()
    archive = write_docker_archive(
        tmp_path / "busybox.tar",
        image,
        oci_layout=form == "oci",
        compressed_layers=form == "classic-gzip",
    )
    pulled = fetch_image(source(f"docker-archive:{archive}"), cache_dir=cache)
    assert pulled.config == image.config_json and pulled.config_digest == image.config.digest
    assert len(pulled.layers) == 2 and pulled.platform == "linux/amd64"
    for layer, original in zip(pulled.layers, image.layers, strict=True):
        with (
            tarfile.open(layer.path) as tar,  # whatever the compression, the same tar inside
            tarfile.open(fileobj=io.BytesIO(original.tar)) as expected_tar,
        ):
            assert tar.getnames() == expected_tar.getnames()
        assert layer.path.parent == cache / "oci" / "blobs" / "sha256"
    expected = "tar+gzip" if form == "classic-gzip" else "tar"
    assert {layer.media_type.rpartition(".")[2] for layer in pulled.layers} == {expected}
    if form == "oci":
        assert pulled.manifest_digest == image.recompressed("none").digest
    again = fetch_image(source(f"docker-archive:{archive}"), cache_dir=cache)
    assert again.manifest_digest == pulled.manifest_digest
    assert resolve_digest(source(f"docker-archive:{archive}"), cache_dir=cache) == (
        pulled.manifest_digest
    )


def read_tar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m) or io.BytesIO()).read() for m in tar.getmembers()}


def write_tar(path: Path, contents: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_docker_archive_layer_is_checked_against_the_diff_id(tmp_path: Path, cache: Path) -> None:
    image = whiteout_image()
    archive = write_docker_archive(tmp_path / "good.tar", image)
    contents = read_tar(archive)
    victim = next(
        n for n, data in contents.items() if n.endswith("layer.tar") and b"kept\n" in data
    )
    contents[victim] = contents[victim].replace(b"kept", b"KEPT")
    damaged = write_tar(tmp_path / "damaged.tar", contents)
    with pytest.raises(FledgeError) as caught:
        fetch_image(source(f"docker-archive:{damaged}"), cache_dir=cache)
    assert str(damaged) in str(caught.value) and image.layers[0].diff_id in str(caught.value)


def test_a_docker_archive_with_several_images_is_refused(tmp_path: Path, cache: Path) -> None:
    archive = write_docker_archive(tmp_path / "one.tar", busybox_image(), repo_tags=["a/b:1"])
    contents = read_tar(archive)
    entries = json.loads(contents["manifest.json"])
    contents["manifest.json"] = json.dumps(
        [*entries, {**entries[0], "RepoTags": ["c/d:2"]}]
    ).encode()
    two = write_tar(tmp_path / "two.tar", contents)
    with pytest.raises(FledgeError, match=r"holds 2 images \(a/b:1; c/d:2\)"):
        fetch_image(source(f"docker-archive:{two}"), cache_dir=cache)


# --- the glibc image -----------------------------------------------------------------------


def test_the_glibc_test_image_carries_its_elf_closure(tmp_path: Path, cache: Path) -> None:
    image = glibc_image(tmp_path / "build")
    layout_dir = write_oci_layout(tmp_path / "layout", {"latest": image})
    pulled = fetch_image(source(f"oci-layout:{layout_dir}"), cache_dir=cache)
    assert_is(pulled, image, cache)
    with tarfile.open(pulled.layers[0].path) as tar:
        names = set(tar.getnames())
    assert GLIBC_SERVER_PATH in names
    assert any(name.endswith("/libc.so.6") for name in names)
    assert any("ld-linux" in name for name in names)
    assert sum(layer.size for layer in pulled.layers) < 4 << 20
