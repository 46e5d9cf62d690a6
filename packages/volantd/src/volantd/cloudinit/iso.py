"""ISO 9660 seeds, written in-process with pycdlib: what ``cloud-localds`` makes.

The volume is labelled ``cidata`` (cloud-init's NoCloud label). Each file has three names: a
plain ISO 9660 one (``USER_DAT.;1``), a Rock Ridge one and a Joliet one (``user-data``).
Linux shows the Rock Ridge names (Joliet's without Rock Ridge), so cloud-init finds
``user-data``, ``meta-data`` and ``network-config`` by their real names.

pycdlib stamps every date with the current local time; `fix_timestamps` then sets them all to
one fixed time in UTC, so the same documents give the same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from datetime import UTC, datetime

import pycdlib

VOLUME_ID = "cidata"
SECTOR = 2048
FIRST_DESCRIPTOR = 16
_ROOT_RECORD = 156  # the root directory's record, inside a primary or supplementary descriptor
_DESCRIPTOR_DATES = (813, 830, 864)  # creation, modification, effective (expiration stays unset)
_UNSET_DATE = b"0" * 16


def iso_image(files: Mapping[str, bytes], when: datetime) -> bytes:
    """An ISO 9660 image (Rock Ridge, Joliet) of `files` in its root, dated `when`."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=VOLUME_ID, joliet=3, rock_ridge="1.09")
    for name, data in files.items():
        iso.add_fp(
            io.BytesIO(data), len(data), f"/{iso9660_name(name)}",
            rr_name=name, joliet_path=f"/{name}",
        )  # fmt: skip
    output = io.BytesIO()
    iso.write_fp(output)
    iso.close()
    image = bytearray(output.getvalue())
    fix_timestamps(image, when)
    return bytes(image)


def iso9660_name(name: str) -> str:
    """The level-1 ISO 9660 name of `name`: ``user-data`` -> ``USER_DAT.;1``."""
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())[:8] + ".;1"


def fix_timestamps(image: bytearray, when: datetime) -> None:
    """Set every date of an ISO 9660 image to `when` (UTC): the volume descriptors' dates,
    every directory record's and every Rock Ridge ``TF`` entry's, in both directory trees."""
    _Stamper(image, when).run()


class _Stamper:
    def __init__(self, image: bytearray, when: datetime) -> None:
        utc = when.astimezone(UTC)
        self.image = image
        fields = (utc.year - 1900, utc.month, utc.day, utc.hour, utc.minute, utc.second, 0)
        self.short = bytes(fields)  # a directory record's date; offset 0: UTC
        self.long = utc.strftime("%Y%m%d%H%M%S").encode() + b"00\x00"  # a descriptor's date
        self.visited: set[int] = set()

    def run(self) -> None:
        image, sector = self.image, FIRST_DESCRIPTOR
        while (start := sector * SECTOR) < len(image) and image[start] != 255:
            if image[start] in (1, 2):  # primary, supplementary (Joliet)
                for offset in _DESCRIPTOR_DATES:
                    field = start + offset
                    if image[field : field + 16] != _UNSET_DATE:
                        image[field : field + 17] = self.long
                self.directory(start + _ROOT_RECORD)
            sector += 1

    def directory(self, record: int) -> None:
        """Stamp the directory whose record is at `record`, its entries and subdirectories."""
        image = self.image
        self.record(record)
        start = _u32(image, record + 2) * SECTOR
        if start in self.visited:
            return
        self.visited.add(start)
        position, end = start, start + _u32(image, record + 10)
        while position < end:
            length = image[position]
            if length == 0:  # records do not cross sectors: the rest of this one is padding
                position = (position // SECTOR + 1) * SECTOR
                continue
            name = bytes(image[position + 33 : position + 33 + image[position + 32]])
            if image[position + 25] & 2 and name not in (b"\x00", b"\x01"):
                self.directory(position)
            else:
                self.record(position)
            position += length

    def record(self, position: int) -> None:
        image = self.image
        image[position + 18 : position + 25] = self.short
        name_length = image[position + 32]
        system_use = position + 33 + name_length + (0 if name_length % 2 else 1)
        self.system_use(system_use, position + image[position])

    def system_use(self, position: int, end: int) -> None:
        """Stamp the Rock Ridge ``TF`` entries in a system use area, following ``CE``."""
        image = self.image
        while position + 4 <= end:
            signature, length = bytes(image[position : position + 2]), image[position + 2]
            if length < 4 or position + length > end or signature == b"ST":
                return
            if signature == b"TF":
                flags = image[position + 4]
                stamp = self.long if flags & 0x80 else self.short
                field = position + 5
                for _ in range(bin(flags & 0x7F).count("1")):
                    if field + len(stamp) > position + length:
                        break
                    image[field : field + len(stamp)] = stamp
                    field += len(stamp)
            elif signature == b"CE":
                area = _u32(image, position + 4) * SECTOR + _u32(image, position + 12)
                if area not in self.visited:
                    self.visited.add(area)
                    self.system_use(area, area + _u32(image, position + 20))
            position += length


def _u32(image: bytearray, offset: int) -> int:
    """A both-byte-order 32-bit field's little-endian half."""
    return int.from_bytes(image[offset : offset + 4], "little")
