"""fledge.toml v1: upstream examples load; upstream's rules hold; upstream's bugs do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from pluginspec import (
    DEFAULT_BUSYBOX_SHA256,
    DEFAULT_BUSYBOX_URL,
    ImageSource,
    SpecError,
    load_fledge_config,
    parse_fledge_config,
    parse_image_source,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec"
HEX = "a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00"
INITRAMFS = 'version = "1"\nstrategy = "initramfs"\n'
OCI = 'version = "1"\nstrategy = "oci_rootfs"\n[source]\nimage = "nginx:alpine"\n'


def issues(text: str) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_fledge_config(text)
    return {issue.path: issue.message for issue in info.value.issues}


@pytest.mark.parametrize(
    ("name", "strategy", "mode"),
    [
        ("initramfs-minimal.toml", "initramfs", "default"),
        ("initramfs-go-webserver.toml", "initramfs", "default"),
        ("initramfs-rust-service.toml", "initramfs", "default"),
        ("mode1-default.toml", "initramfs", "default"),
        ("mode2-custom-init.toml", "initramfs", "custom"),
        ("mode3-no-init.toml", "initramfs", "none"),
        ("test-fledge.toml", "initramfs", "custom"),
        ("oci-nginx.toml", "oci_rootfs", None),
        ("oci-postgres.toml", "oci_rootfs", None),
        ("oci-python-flask.toml", "oci_rootfs", None),
        ("readme-dockerfile-oci.toml", "oci_rootfs", None),
    ],
)
def test_upstream_example_configs_load(name: str, strategy: str, mode: str | None) -> None:
    config = load_fledge_config(FIXTURES / "fledge" / name)
    assert config.strategy == strategy
    assert config.init_mode == mode
    if mode in ("custom", "none"):
        assert config.agent is None
    else:  # the examples name upstream's release strategy, which fledge reads as bundled
        assert config.agent is not None and config.agent.source_strategy == "release"


def test_mode2_custom_init_keeps_its_mappings() -> None:
    config = load_fledge_config(FIXTURES / "fledge" / "mode2-custom-init.toml")
    assert config.init is not None and config.init.path == "/usr/local/bin/my-init.sh"
    assert config.mappings == {
        "./my-init.sh": "/usr/local/bin/my-init.sh",
        "./redis-server": "/usr/bin/redis-server",
    }
    assert config.source.busybox_sha256 == DEFAULT_BUSYBOX_SHA256


def test_readme_dockerfile_config() -> None:
    config = load_fledge_config(FIXTURES / "fledge" / "readme-dockerfile-oci.toml")
    assert config.source.dockerfile == "./Dockerfile" and config.source.context == "."
    assert config.source.target is None and config.source.build_args == {"FOO": "bar"}
    assert config.filesystem is not None
    assert (config.filesystem.type, config.filesystem.compression_level) == ("squashfs", 15)
    assert config.filesystem.overlay_size == "1G"


def test_initramfs_defaults() -> None:
    config = parse_fledge_config(INITRAMFS)
    assert config.agent is not None
    assert (config.agent.source_strategy, config.agent.version) == ("bundled", None)
    assert config.source.busybox_url is None  # the build host's static busybox
    assert config.source.busybox_sha256 is None
    assert config.initramfs is not None and config.initramfs.compression == "zstd"
    assert config.filesystem is None and config.mappings == {}


def test_oci_defaults_include_an_agent_and_a_squashfs_filesystem() -> None:
    config = parse_fledge_config(OCI)
    assert config.agent is not None and config.agent.source_strategy == "bundled"
    assert config.filesystem is not None
    assert config.filesystem.model_dump() == {
        "type": "squashfs",
        "compression_level": 15,
        "overlay_size": "1G",
        "size_buffer_mb": None,
        "preallocate": None,
    }
    ext4 = parse_fledge_config(OCI + '[filesystem]\ntype = "ext4"\n').filesystem
    assert ext4 is not None and (ext4.size_buffer_mb, ext4.preallocate) == (0, False)
    assert ext4.compression_level is None and ext4.overlay_size is None
    assert config.initramfs is None
    assert config.source.busybox_url is None


def test_busybox_downloads_need_a_checksum_and_only_the_default_url_gets_one() -> None:
    assert issues(INITRAMFS + '[source]\nbusybox_url = "https://x.test/busybox"\n') == {
        "source.busybox_sha256": "is required with an http(s) busybox_url: fledge verifies "
        "every download (write busybox_sha256 = '<64 hex digits>')"
    }
    default = parse_fledge_config(INITRAMFS + f'[source]\nbusybox_url = "{DEFAULT_BUSYBOX_URL}"\n')
    assert default.source.busybox_sha256 == DEFAULT_BUSYBOX_SHA256
    local = parse_fledge_config(INITRAMFS + '[source]\nbusybox_url = "./bin/busybox"\n')
    assert (local.source.busybox_url, local.source.busybox_sha256) == ("./bin/busybox", None)
    pinned = parse_fledge_config(
        INITRAMFS + f'[source]\nbusybox_url = "/opt/busybox"\nbusybox_sha256 = "{HEX.upper()}"\n'
    )
    assert pinned.source.busybox_sha256 == f"sha256:{HEX}"


def test_dot_dot_is_rejected_only_as_a_path_component() -> None:
    text = INITRAMFS + '[mappings]\n"a" = "/opt/a..b"\n"b" = "/opt/../etc/passwd"\n"c" = "/x/.."\n'
    assert issues(text) == {
        "mappings.b": "destination '/opt/../etc/passwd' contains a '..' path component",
        "mappings.c": "destination '/x/..' contains a '..' path component",
    }
    assert parse_fledge_config(INITRAMFS + '[mappings]\n"a" = "/opt/a..b"\n').mappings == {
        "a": "/opt/a..b"
    }


def test_mapping_rules() -> None:
    text = INITRAMFS + '[mappings]\n"" = "/x"\n"./app" = "usr/bin/app"\n"./lib" = ""\n'
    assert issues(text) == {
        'mappings.""': "mapping source path cannot be empty",
        'mappings."./app"': "destination 'usr/bin/app' must be an absolute path (start with /)",
        'mappings."./lib"': "destination path cannot be empty",
    }


def test_init_modes_and_the_agent() -> None:
    agent = '[agent]\nsource_strategy = "release"\nversion = "latest"\n'
    custom = INITRAMFS + '[init]\npath = "./init.sh"\n' + agent
    assert issues(custom) == {
        "agent": "section cannot be specified with custom init mode ([init] path set); "
        "remove [agent] or change [init]"
    }
    none = INITRAMFS + "[init]\nnone = true\n" + agent + '[mappings]\n"./sup" = "/init"\n'
    assert issues(none) == {
        "agent": "section cannot be specified with no-init mode ([init] none = true); "
        "remove [agent] or change [init]"
    }
    both = INITRAMFS + '[init]\nnone = true\npath = "./x"\n[mappings]\n"./x" = "/init"\n'
    assert issues(both) == {"init.none": "cannot be true together with init.path: choose one"}
    empty = parse_fledge_config(INITRAMFS + "[init]\nnone = false\n")
    assert empty.init_mode == "default" and empty.agent is not None


def test_no_init_mode_needs_a_mapping_to_init() -> None:
    text = INITRAMFS + '[init]\nnone = true\n[mappings]\n"./sup" = "/usr/bin/sup"\n'
    assert issues(text) == {
        "mappings": "[init] none = true needs a mapping to /init (the program run as PID 1)"
    }


def test_agent_strategies() -> None:
    found = issues(INITRAMFS + '[agent]\nsource_strategy = "ftp"\n')
    assert found == {
        "agent.source_strategy": "invalid value 'ftp', must be one of: bundled, release, "
        "local, http"
    }
    assert issues(INITRAMFS + '[agent]\nsource_strategy = "local"\n') == {
        "agent.path": "is required when using the 'local' source strategy"
    }
    assert issues(INITRAMFS + '[agent]\nsource_strategy = "http"\nversion = "v1"\n') == {
        "agent.url": "is required when using the 'http' source strategy",
        "agent.version": "is only used with source_strategy 'release'",
    }
    assert issues(INITRAMFS + "[agent]\n") == {"agent.source_strategy": "is required"}
    http = parse_fledge_config(
        INITRAMFS
        + '[agent]\nsource_strategy = "http"\nurl = "https://x.test/kestrel"\n'
        + f'checksum = "sha256:{HEX}"\n'
    )
    assert http.agent is not None and http.agent.checksum == f"sha256:{HEX}"
    assert issues(INITRAMFS + '[agent]\nsource_strategy = "bundled"\npath = "./k.pyz"\n') == {
        "agent.path": "is only used with source_strategy 'local'"
    }
    release = parse_fledge_config(INITRAMFS + '[agent]\nsource_strategy = "release"\n')
    assert release.agent is not None and release.agent.version is None


def test_oci_source_rules() -> None:
    base = 'version = "1"\nstrategy = "oci_rootfs"\n'
    assert issues(base) == {
        "source": "either 'source.image' or 'source.dockerfile' is required for oci_rootfs strategy"
    }
    both = base + '[source]\nimage = "nginx"\ndockerfile = "Dockerfile"\n'
    assert issues(both) == {
        "source.dockerfile": "only one of source.image or source.dockerfile may be given"
    }
    busybox = OCI + 'busybox_url = "https://x.test/bb"\ntarget = "prod"\n'
    assert issues(busybox) == {
        "source.target": "is only used with source.dockerfile",
        "source.busybox_url": "is only used with strategy 'initramfs'",
    }


def test_sections_the_strategy_does_not_use_are_errors() -> None:
    assert issues(INITRAMFS + '[filesystem]\ntype = "ext4"\n') == {
        "filesystem": "is only used with strategy 'oci_rootfs'"
    }
    assert issues(OCI + "[init]\nnone = true\n[initramfs]\ncompression = 'gzip'\n") == {
        "init": "is only used with strategy 'initramfs'",
        "initramfs": "is only used with strategy 'initramfs'",
    }
    assert issues(OCI + '[filesystem]\ntype = "squashfs"\nsize_buffer_mb = 10\n') == {
        "filesystem.size_buffer_mb": "is only used by type ext4, xfs and btrfs, not squashfs"
    }
    assert issues(OCI + '[filesystem]\ntype = "ext4"\noverlay_size = "2G"\n') == {
        "filesystem.overlay_size": "is only used by type squashfs, not ext4"
    }


def test_filesystem_values() -> None:
    zero = parse_fledge_config(OCI + "[filesystem]\ncompression_level = 0\n")
    assert zero.filesystem is not None and zero.filesystem.compression_level == 15
    assert issues(OCI + "[filesystem]\ncompression_level = 23\noverlay_size = 'lots'\n") == {
        "filesystem.compression_level": "must be between 0 and 22 (got 23)",
        "filesystem.overlay_size": "must be a size like 512M or 1G (got 'lots')",
    }
    assert issues(OCI + "[filesystem]\ntype = 'ntfs'\n") == {
        "filesystem.type": "invalid value 'ntfs', must be one of: ext4, squashfs, xfs, btrfs"
    }


def test_initramfs_compression() -> None:
    for value in ("none", "gzip", "zstd"):
        config = parse_fledge_config(INITRAMFS + f'[initramfs]\ncompression = "{value}"\n')
        assert config.initramfs is not None and config.initramfs.compression == value
    assert "initramfs.compression" in issues(INITRAMFS + '[initramfs]\ncompression = "xz"\n')


@pytest.mark.parametrize(
    ("given", "stored", "parsed"),
    [
        ("nginx:alpine", "nginx:alpine", ImageSource("registry", "nginx:alpine")),
        ("docker://nginx:alpine", "nginx:alpine", ImageSource("registry", "nginx:alpine")),
        (
            "localhost:5000/team/app@sha256:" + HEX,
            "localhost:5000/team/app@sha256:" + HEX,
            ImageSource("registry", "localhost:5000/team/app@sha256:" + HEX),
        ),
        (
            "oci-layout:./out/layout:v1",
            "oci-layout:./out/layout:v1",
            ImageSource("oci-layout", "./out/layout", "v1"),
        ),
        (
            "oci-layout:/srv/layout",
            "oci-layout:/srv/layout",
            ImageSource("oci-layout", "/srv/layout"),
        ),
        (
            "docker-archive:app.tar",
            "docker-archive:app.tar",
            ImageSource("docker-archive", "app.tar"),
        ),
    ],
)
def test_image_sources(given: str, stored: str, parsed: ImageSource) -> None:
    config = parse_fledge_config(OCI.replace("nginx:alpine", given))
    assert config.source.image == stored
    assert config.source.image_source == parsed == parse_image_source(given)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("Nginx:alpine", "repository names must be lower-case"),
        ("docker-daemon:/var/run/x", "unsupported image source"),
        ("s3://bucket/image", "unsupported image source"),
        ("docker-archive:", "needs the path"),
        ("nginx:bad tag", "is not a valid image reference"),
    ],
)
def test_bad_image_sources(given: str, message: str) -> None:
    assert message in issues(OCI.replace("nginx:alpine", given))["source.image"]
    with pytest.raises(SpecError):
        parse_image_source(given)


def test_version_must_be_the_string_1() -> None:
    assert issues('version = 1\nstrategy = "initramfs"\n') == {
        "version": 'must be the string "1" (write version = "1"), got 1'
    }
    assert issues('strategy = "initramfs"\n') == {"version": "is required"}
    assert issues('version = "1"\nstrategy = "docker"\n') == {
        "strategy": "invalid value 'docker', must be one of: initramfs, oci_rootfs"
    }


def test_unknown_keys_are_errors_that_name_the_key() -> None:
    text = INITRAMFS + 'colour = "blue"\n[agent]\nsourc_strategy = "release"\n'
    found = issues(text)
    assert found["colour"].startswith("unknown key 'colour' (allowed: version, strategy,")
    assert found["agent.sourc_strategy"] == (
        "unknown key 'sourc_strategy' (did you mean 'source_strategy'?)"
    )


def test_seed_page_mapping_table_misplaced_under_init_is_caught() -> None:
    text = (
        INITRAMFS
        + f'[source]\nbusybox_url = "https://x.test/busybox"\nbusybox_sha256 = "{HEX}"\n'
        + '[init]\npath = "./init.sh"\n\nmappings = { "./init.sh" = "/init" }\n'
    )
    found = issues(text)
    assert found == {"init.mappings": "unknown key 'mappings' (allowed: path, none)"}


def test_placeholder_checksums_from_docs_are_rejected() -> None:
    text = INITRAMFS + '[source]\nbusybox_sha256 = "<sha256>"\n'
    assert issues(text) == {
        "source.busybox_sha256": "must be 'sha256:' followed by 64 hex digits, or 64 hex digits "
        "(got '<sha256>')"
    }


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(SpecError) as info:
        load_fledge_config(FIXTURES / "invalid" / "fledge-many-errors.toml")
    lines = str(info.value).splitlines()
    prefix = f"{FIXTURES / 'invalid' / 'fledge-many-errors.toml'}: "
    assert all(line.startswith(prefix) for line in lines)
    assert [line.removeprefix(prefix).split(":")[0] for line in lines] == [
        "version",
        "agent.source_strategy",
        "source.busybox_url",
        "source.busybox_sha256",
        "filesystem.type",
        'mappings."./app"',
        'mappings."./lib"',
        "colour",
    ]


def test_toml_errors_name_the_line() -> None:
    found = issues('version = "1"\nstrategy = initramfs\n')
    assert found[""].startswith("invalid TOML") and "line 2" in found[""]


def test_parse_accepts_an_already_decoded_table() -> None:
    config = parse_fledge_config({"version": "1", "strategy": "initramfs"})
    assert config.agent is not None
    with pytest.raises(SpecError, match="must be a table"):
        parse_fledge_config(["version"])  # type: ignore[arg-type]
