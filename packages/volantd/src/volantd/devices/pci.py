"""PCI addresses (``0000:01:00.0``) and vendor:device allow-lists (``10de:1db6``, ``10de:*``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from volantd.devices.errors import InvalidDeviceError

_ADDRESS = re.compile(r"(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([01][0-9a-f])\.([0-7])", re.IGNORECASE)
_PCI_ID = re.compile(r"([0-9a-f]{4}):([0-9a-f]{4}|\*)", re.IGNORECASE)


def parse_address(text: str) -> str:
    """`text` as sysfs names the device: domain, bus, slot, function, lower case
    (``01:00.0`` gets domain ``0000``, as in pluginspec's ``devices.pci_passthrough``)."""
    match = _ADDRESS.fullmatch(text.strip())
    if match is None:
        raise InvalidDeviceError(
            f"{text!r} is not a PCI address like 0000:01:00.0 (domain:bus:slot.function, "
            "as `lspci -D` prints it)"
        )
    domain, bus, slot, function = match.groups()
    return f"{domain or '0000'}:{bus}:{slot}.{function}".lower()


def parse_addresses(texts: Iterable[str]) -> list[str]:
    """Every address parsed, duplicates dropped, in the given order."""
    return list(dict.fromkeys(parse_address(text) for text in texts))


@dataclass(frozen=True)
class AllowList:
    """``vendor:device`` entries (``*`` for any device of the vendor), in lower-case hex.

    ``deny_when_empty`` says what an empty list means: nothing is allowed (the host's list:
    passthrough is off until an operator names devices), or no restriction (a VM's list).
    """

    entries: tuple[str, ...] = ()
    deny_when_empty: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str], *, deny_when_empty: bool = False) -> AllowList:
        parsed = []
        for entry in entries:
            if not _PCI_ID.fullmatch(entry.strip()):
                raise InvalidDeviceError(
                    f"allow-list entry {entry!r} is not 'vendor:device' or 'vendor:*' in hex, "
                    "like 10de:1db6 or 10de:*"
                )
            parsed.append(entry.strip().lower())
        return cls(tuple(parsed), deny_when_empty)

    def permits(self, vendor: str, device: str) -> bool:
        if not self.entries:
            return not self.deny_when_empty
        wanted = {f"{vendor}:{device}".lower(), f"{vendor}:*".lower()}
        return any(entry in wanted for entry in self.entries)
