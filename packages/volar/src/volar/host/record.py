"""What `volar setup --bridge` made on this host, so `volar setup --teardown` removes exactly
that and nothing it found there: ``$VOLANT_HOME/host-setup.json``.

Setup writes the record before it changes anything (a setup that fails half-way is still
recorded; teardown skips what is not there) and merges it with the earlier one, so a second
run does not forget what the first made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volar.client import VolarError
from volar.host.network import IptablesRule

RECORD_NAME = "host-setup.json"
FORMAT = 1


class RecordError(VolarError):
    """The record exists but cannot be read."""


@dataclass(frozen=True, order=True)
class RecordedAddress:
    address: str  # CIDR: 192.168.127.1/24
    dev: str


@dataclass(frozen=True)
class SetupRecord:
    bridges_created: tuple[str, ...] = ()
    bridges_preexisting: tuple[str, ...] = ()  # used, not made: teardown keeps them
    addresses: tuple[RecordedAddress, ...] = ()
    ip_forward_before: str | None = None  # set when setup turned forwarding on
    nft_table: str | None = None  # "ip volant"
    iptables_rules: tuple[IptablesRule, ...] = ()

    @property
    def creates_anything(self) -> bool:
        return bool(
            self.bridges_created
            or self.addresses
            or self.ip_forward_before is not None
            or self.nft_table
            or self.iptables_rules
        )

    def merged(self, later: SetupRecord) -> SetupRecord:
        """This record and a later run's, in a canonical order; the earliest value of
        ip_forward wins (it is the one to restore)."""
        created = set(self.bridges_created) | set(later.bridges_created)
        found = (set(self.bridges_preexisting) | set(later.bridges_preexisting)) - created
        forward = self.ip_forward_before
        return SetupRecord(
            bridges_created=tuple(sorted(created)),
            bridges_preexisting=tuple(sorted(found)),
            addresses=tuple(sorted(set(self.addresses) | set(later.addresses))),
            ip_forward_before=later.ip_forward_before if forward is None else forward,
            nft_table=self.nft_table or later.nft_table,
            iptables_rules=tuple(sorted(set(self.iptables_rules) | set(later.iptables_rules))),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "written_by": "volar setup --bridge; `volar setup --teardown` removes what it lists",
            "bridges_created": list(self.bridges_created),
            "bridges_preexisting": list(self.bridges_preexisting),
            "addresses": [{"address": a.address, "dev": a.dev} for a in self.addresses],
            "ip_forward_before": self.ip_forward_before,
            "nft_table": self.nft_table,
            "iptables_rules": [rule.as_dict() for rule in self.iptables_rules],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SetupRecord:
        """ValueError (or KeyError, TypeError) when `text` is not a record."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} record")
        forward = data.get("ip_forward_before")
        parsed = cls(
            bridges_created=tuple(str(name) for name in data.get("bridges_created", ())),
            bridges_preexisting=tuple(str(name) for name in data.get("bridges_preexisting", ())),
            addresses=tuple(
                RecordedAddress(str(item["address"]), str(item["dev"]))
                for item in data.get("addresses", ())
            ),
            ip_forward_before=None if forward is None else str(forward),
            nft_table=data.get("nft_table") or None,
            iptables_rules=tuple(
                IptablesRule(str(item["table"]), str(item["chain"]),
                             tuple(str(arg) for arg in item["rule"]))
                for item in data.get("iptables_rules", ())
            ),
        )  # fmt: skip
        return SetupRecord().merged(parsed)


def record_path(home: Path) -> Path:
    return home / RECORD_NAME


def load_record(path: Path) -> SetupRecord | None:
    """The record at `path`; None when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RecordError(f"cannot read {path}: {error.strerror}") from None
    try:
        return SetupRecord.from_json(text)
    except (ValueError, KeyError, TypeError) as error:
        raise RecordError(
            f"{path} is not a record of `volar setup --bridge` ({error}): remove what it "
            "lists by hand, then the file"
        ) from None
