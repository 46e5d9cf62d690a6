"""OCI image → ext4 root disk: fledge against skopeo + umoci + mkfs.ext4 on the same images.

In one run, for two images made here from Debian packages (about 100 MB and 500 MB of files,
four gzip layers each, pushed to a local `docker-registry` on 127.0.0.1):

  (a) fledge, cold: a fresh blob cache, `fledge build` of an oci_rootfs fledge.toml (pull,
      verify, unpack, ext4 via mkfs.ext4 -d, shrink to fit, manifest);
  (b) the chain upstream used, minus its loop mount: `skopeo copy docker://… oci:DIR`,
      `umoci unpack`, `mkfs.ext4 -d` (sized like fledge: content + 25 %, at least 64 MiB);
  (c) fledge again on the same output: the cache hit.

Runs alternate (a) and (b) and print medians, the ratio a/b (target <= 0.8) and the cache hit
(target < 0.3 s). fledge runs in this process (its import cost is excluded; the chain's three
processes start in well under that). Debian packages are fetched with `apt-get download` once
into ~/.cache/volant-bench/debs.

    uv run python benchmarks/oci.py [--runs 3] [--sizes 100,500]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fledge.initramfs import BuildOptions, build
from support.oci_images import build_image, make_layer
from support.registry import run_registry

DEB_CACHE = Path.home() / ".cache" / "volant-bench" / "debs"
LAYERS = 4
# Common Debian 12 packages, taken in this order until the image is big enough.
CANDIDATES = [
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libssl3",
    "libsqlite3-0",
    "libffi8",
    "libexpat1",
    "libbz2-1.0",
    "liblzma5",
    "libncursesw6",
    "libreadline8",
    "libtinfo6",
    "libuuid1",
    "libdb5.3",
    "libgdbm6",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11",
    "perl-base",
    "perl-modules-5.36",
    "libperl5.36",
    "bash",
    "coreutils",
    "busybox-static",
    "tzdata",
    "libicu72",
    "libxml2",
    "libcurl4",
    "curl",
    "git",
    "git-man",
    "vim-runtime",
    "gcc-12",
    "cpp-12",
    "libgcc-12-dev",
    "binutils-x86-64-linux-gnu",
    "libbinutils",
    "libisl23",
    "libmpc3",
    "libmpfr6",
    "libgmp10",
    "libllvm14",
    "libclang-cpp14",
    "clang-14",
    "llvm-14",
    "libz3-4",
    "openjdk-17-jre-headless",
]


def run(command: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed ({done.returncode}):\n{done.stderr.strip()}")


def installed_size_kib(package: str) -> int:
    """The package's Installed-Size; 0 when this machine's apt does not know it."""
    shown = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True
    ).stdout
    for line in shown.splitlines():
        if line.startswith("Installed-Size:"):
            return int(line.split()[1])
    return 0


def debian_tree(target_mb: int, root: Path) -> list[str]:
    """Extract Debian packages (downloaded once) into ``root`` until they hold ``target_mb``."""
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    chosen, total = [], 0
    for package in CANDIDATES:
        if total >= target_mb * 1024:
            break
        size = installed_size_kib(package)
        if size == 0:
            continue
        if not list(DEB_CACHE.glob(f"{package}_*.deb")):
            run(["apt-get", "download", package], cwd=DEB_CACHE)
        chosen.append(package)
        total += size
    for package in chosen:
        (deb,) = DEB_CACHE.glob(f"{package}_*.deb")
        run(["dpkg-deb", "-x", str(deb), str(root)])
    return chosen


def split_layers(root: Path, parts: Path) -> list[Path]:
    """``root``'s top-level folders spread over LAYERS trees of similar size."""
    sizes = {
        child: sum(p.lstat().st_size for p in child.rglob("*")) if child.is_dir() else 0
        for child in root.iterdir()
    }
    trees = [parts / f"layer{i}" for i in range(LAYERS)]
    load = [0] * LAYERS
    for child in sorted(sizes, key=sizes.__getitem__, reverse=True):
        slot = load.index(min(load))
        trees[slot].mkdir(parents=True, exist_ok=True)
        shutil.move(str(child), trees[slot] / child.name)
        load[slot] += sizes[child]
    return [tree for tree in trees if tree.exists()]


def du_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def chain(reference: str, work: Path) -> float:
    """skopeo copy + umoci unpack + mkfs.ext4 -d, timed."""
    work.mkdir(parents=True)
    layout, bundle, image = work / "layout", work / "bundle", work / "root.img"
    started = time.monotonic()
    run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{reference}", f"oci:{layout}:b"])
    run(["umoci", "unpack", "--image", f"{layout}:b", str(bundle)])
    rootfs = bundle / "rootfs"
    content = du_bytes(rootfs)
    size = content + max(64 << 20, content // 4)
    with open(image, "wb") as disk:
        disk.truncate(size)
    run(["mkfs.ext4", "-q", "-F", "-d", str(rootfs), str(image)])
    return time.monotonic() - started


def fledge_build(config: Path, output: Path, cache: Path) -> tuple[float, bool]:
    started = time.monotonic()
    result = build(config, BuildOptions(output_dir=output, cache_dir=cache, insecure_http=True))
    return time.monotonic() - started, bool(getattr(result, "cached", False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="100,500", help="image sizes in MB, comma-separated")
    options = parser.parse_args()
    for tool in ("skopeo", "umoci", "mkfs.ext4", "docker-registry", "apt-get"):
        if shutil.which(tool) is None:
            sys.exit(f"benchmarks/oci.py needs {tool} (run scripts/bootstrap)")

    with tempfile.TemporaryDirectory(prefix="volant-bench-oci-") as tmp:
        root = Path(tmp)
        with run_registry(root / "registry") as registry:
            for target in (int(size) for size in options.sizes.split(",")):
                tree = root / f"tree{target}"
                packages = debian_tree(target, tree)
                content = du_bytes(tree)
                layers = [make_layer(t) for t in split_layers(tree, root / f"parts{target}")]
                image = build_image(layers, entrypoint=["/bin/bash"], cmd=["-c", "sleep 1d"])
                blob_bytes = sum(layer.blob.size for layer in layers)
                registry.push(f"bench/img{target}", image)
                reference = registry.reference(f"bench/img{target}")
                print(
                    f"\nimage {target} MB: {len(packages)} Debian packages, "
                    f"{content / 1e6:.0f} MB of files, {len(layers)} gzip layers "
                    f"({blob_bytes / 1e6:.0f} MB), {reference}"
                )
                config = root / f"fledge{target}.toml"
                config.write_text(
                    f'version = "1"\nstrategy = "oci_rootfs"\n\n[source]\nimage = "{reference}"\n'
                    '\n[filesystem]\ntype = "ext4"\n'
                )
                fledge_s, chain_s, hits = [], [], []
                for index in range(options.runs):
                    work = root / f"run{target}-{index}"
                    work.mkdir()
                    order = ("fledge", "chain") if index % 2 == 0 else ("chain", "fledge")
                    for which in order:
                        if which == "fledge":
                            seconds, _ = fledge_build(config, work / "out", work / "cache")
                            fledge_s.append(seconds)
                            hit, cached = fledge_build(config, work / "out", work / "cache")
                            assert cached, "the second build was not a cache hit"
                            hits.append(hit)
                        else:
                            chain_s.append(chain(reference, work / "chain"))
                    shutil.rmtree(work)
                    print(
                        f"  run {index + 1}: fledge {fledge_s[-1]:.2f} s, skopeo+umoci+mkfs "
                        f"{chain_s[-1]:.2f} s, cache hit {hits[-1] * 1000:.0f} ms"
                    )
                a, b = statistics.median(fledge_s), statistics.median(chain_s)
                print(
                    f"  median: fledge {a:.2f} s, baseline {b:.2f} s, ratio {a / b:.2f} "
                    f"(target <= 0.8); cache hit {statistics.median(hits) * 1000:.0f} ms "
                    "(target < 300 ms)"
                )
                shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
