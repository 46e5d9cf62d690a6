"""Host programs volantd shells out to, and the Debian packages that provide them."""

import shutil

from volantd.errors import MissingHostToolError

PACKAGES: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "dnsmasq": "dnsmasq-base",
    "nft": "nftables",
}


def require_tool(tool: str, purpose: str) -> str:
    """The absolute path of `tool`, or a MissingHostToolError naming the package to install."""
    found = shutil.which(tool)
    if found is None:
        raise MissingHostToolError(tool, PACKAGES.get(tool, tool), purpose)
    return found
