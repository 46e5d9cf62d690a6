"""The plans of `volar setup --bridge` and `volar setup --teardown`, from facts only.

:func:`plan_bridge`: record what is about to be made, then the bridge, its address, the link
up, IPv4 forwarding, and NAT (table ``ip volant`` by `nft -f`, or iptables rules). Each step
is DONE when the host already has it. :func:`plan_teardown`: remove what the record lists and
the host still has, keeping what setup found there.
"""

from __future__ import annotations

from pathlib import Path

from volar.host.network import (
    NFT_TABLE,
    NetworkFacts,
    NetworkSettings,
    iptables_rules,
    nft_script,
    nft_table_matches,
)
from volar.host.record import RecordedAddress, SetupRecord
from volar.host.steps import Step, StepKind

FORWARD_SYSCTL = "net.ipv4.ip_forward"


def _as_root(title: str, command: tuple[str, ...], content: str = "") -> Step:
    return Step(StepKind.RUN, title, command, content=content, needs_root=True)


def _blockers(settings: NetworkSettings, facts: NetworkFacts) -> list[Step]:
    title = f"bridged networking on {settings.bridge}"
    subnet, bridge = settings.subnet, settings.bridge
    if "ip" not in facts.tools:
        return [
            Step(
                StepKind.BLOCKED,
                title,
                note="iproute2's ip is not on PATH: apt-get install iproute2",
            )
        ]
    blocked = []
    for other in facts.links:
        for address in other.addresses:
            if other.name != bridge and address.network.overlaps(subnet):
                blocked.append(
                    Step(
                        StepKind.BLOCKED,
                        title,
                        note=f"{other.name} already has {address}, in the subnet {subnet}: "
                        "pick another --subnet (VOLANT_SUBNET), or remove that address",
                    )
                )
    link = facts.link(bridge)
    if link is not None and link.kind != "bridge":
        blocked.append(
            Step(
                StepKind.BLOCKED,
                title,
                note=f"{bridge} exists and is a {link.kind or 'network device'}, not a bridge: "
                "pick another --bridge-name (VOLANT_BRIDGE)",
            )
        )
    elif link is not None:
        for address in link.addresses:
            if address != settings.host_interface and address.network.overlaps(subnet):
                blocked.append(
                    Step(
                        StepKind.BLOCKED,
                        title,
                        note=f"{bridge} already has {address}, not {settings.host_interface}: "
                        f"pass --host-ip {address.ip} --subnet {address.network} to keep it, "
                        "or remove it (`volar setup --teardown` if volar set it up)",
                    )
                )
    if facts.ip_forward != "1" and "sysctl" not in facts.tools:
        blocked.append(
            Step(
                StepKind.BLOCKED,
                "IPv4 forwarding",
                note="sysctl is not on PATH: apt-get install procps",
            )
        )
    if not {"nft", "iptables"} & facts.tools:
        blocked.append(
            Step(
                StepKind.BLOCKED,
                "NAT",
                note="neither nft nor iptables is on PATH: apt-get install nftables",
            )
        )
    return blocked


def plan_bridge(
    settings: NetworkSettings,
    facts: NetworkFacts,
    record: SetupRecord | None,
    path: Path,
) -> list[Step]:
    """The steps that give the host `settings`' bridge with NAT, recorded at `path`."""
    blocked = _blockers(settings, facts)
    if blocked:
        return blocked
    bridge, cidr = settings.bridge, str(settings.host_interface)
    link = facts.link(bridge)
    earlier = record or SetupRecord()
    steps: list[Step] = []
    if link is None:
        made = SetupRecord(bridges_created=(bridge,))
        steps.append(
            _as_root(f"create bridge {bridge}", ("ip", "link", "add", bridge, "type", "bridge"))
        )
    else:
        made = SetupRecord(bridges_preexisting=(bridge,))
        whose = (
            "made by volar setup"
            if bridge in earlier.bridges_created
            else "was there before volar setup: teardown keeps it"
        )
        steps.append(Step(StepKind.DONE, f"bridge {bridge}", note=f"exists ({whose})"))
    if link is not None and settings.host_interface in link.addresses:
        steps.append(Step(StepKind.DONE, f"address {cidr} on {bridge}", note="present"))
    else:
        made = made.merged(SetupRecord(addresses=(RecordedAddress(cidr, bridge),)))
        steps.append(
            _as_root(
                f"give {bridge} the address {cidr}", ("ip", "addr", "replace", cidr, "dev", bridge)
            )
        )
    if link is not None and link.up:
        steps.append(Step(StepKind.DONE, f"link {bridge}", note="up"))
    else:
        steps.append(_as_root(f"bring {bridge} up", ("ip", "link", "set", bridge, "up")))
    if facts.ip_forward == "1":
        steps.append(Step(StepKind.DONE, "IPv4 forwarding", note="on"))
    else:
        if facts.ip_forward is not None:
            made = made.merged(SetupRecord(ip_forward_before=facts.ip_forward))
        steps.append(_as_root("turn IPv4 forwarding on", ("sysctl", "-w", f"{FORWARD_SYSCTL}=1")))
    steps += _nat_steps(settings, facts)
    if any(step.pending and step.command[:1] == ("nft",) for step in steps):
        made = made.merged(SetupRecord(nft_table=f"ip {NFT_TABLE}"))
    made = made.merged(
        SetupRecord(
            iptables_rules=tuple(
                rule
                for rule in iptables_rules(settings)
                if any(step.pending and step.command == rule.command("-A") for step in steps)
            )
        )
    )
    merged = earlier.merged(made)
    if merged != earlier and (merged.creates_anything or record is not None):
        # Written first: a setup that fails half-way is still undone by --teardown.
        record_step = Step(
            StepKind.WRITE,
            f"record what volar sets up in {path}",
            path=path,
            content=merged.to_json(),
        )
    elif record is None:
        record_step = Step(StepKind.SKIP, "record", note="nothing here was made by volar setup")
    else:
        record_step = Step(StepKind.DONE, "record", note=f"{path} is up to date")
    return [record_step, *steps]


def _nat_steps(settings: NetworkSettings, facts: NetworkFacts) -> list[Step]:
    title = f"NAT for {settings.subnet}, forwarding through {settings.bridge}"
    if "nft" in facts.tools:
        if nft_table_matches(facts.nft_table, settings):
            return [Step(StepKind.DONE, title, note=f"table ip {NFT_TABLE} is up to date")]
        script = nft_script(settings)
        return [_as_root(f"{title} (nftables table ip {NFT_TABLE})", ("nft", "-f", "-"), script)]
    steps = []
    for rule in iptables_rules(settings):
        rule_title = f"iptables rule {rule.summary}"
        if rule in facts.iptables_present:
            steps.append(Step(StepKind.DONE, rule_title, note="present (nft is not on PATH)"))
        else:
            steps.append(_as_root(rule_title, rule.command("-A")))
    return steps


def plan_teardown(record: SetupRecord, facts: NetworkFacts, path: Path) -> list[Step]:
    """The steps that remove what `record` lists and the host still has; the record goes last
    (what teardown has to leave stays recorded for another try)."""
    steps: list[Step] = []
    if record.nft_table:
        title = f"remove nftables table {record.nft_table}"
        if "nft" not in facts.tools:
            steps.append(Step(StepKind.BLOCKED, title, note="nft is not on PATH"))
        elif facts.nft_table is None:
            steps.append(Step(StepKind.DONE, title, note="already gone"))
        else:
            command = ("nft", "delete", "table", *record.nft_table.split())
            steps.append(_as_root(title, command))
    for rule in record.iptables_rules:
        title = f"remove iptables rule {rule.summary}"
        if "iptables" not in facts.tools:
            steps.append(Step(StepKind.BLOCKED, title, note="iptables is not on PATH"))
        elif rule in facts.iptables_present:
            steps.append(_as_root(title, rule.command("-D")))
        else:
            steps.append(Step(StepKind.DONE, title, note="already gone"))
    left = SetupRecord()
    deleting: list[str] = []
    bridge_steps = []
    for name in record.bridges_created:
        title = f"delete bridge {name}"
        ports = facts.ports(name)
        if facts.link(name) is None:
            bridge_steps.append(Step(StepKind.DONE, title, note="already gone"))
        elif ports:
            left = left.merged(SetupRecord(bridges_created=(name,)))
            bridge_steps.append(
                Step(
                    StepKind.SKIP,
                    title,
                    note=f"left in place: {', '.join(ports)} still attached to it (VMs running? "
                    "stop them, then run `volar setup --teardown` again)",
                )
            )
        else:
            deleting.append(name)
            bridge_steps.append(_as_root(title, ("ip", "link", "delete", name, "type", "bridge")))
    for name in record.bridges_preexisting:
        bridge_steps.append(
            Step(StepKind.SKIP, f"bridge {name}", note="was there before volar setup: kept")
        )
    for address in record.addresses:
        title = f"remove address {address.address} from {address.dev}"
        link = facts.link(address.dev)
        if address.dev in deleting:
            steps.append(Step(StepKind.SKIP, title, note=f"goes with bridge {address.dev}"))
        elif link is None or address.address not in {str(a) for a in link.addresses}:
            steps.append(Step(StepKind.DONE, title, note="already gone"))
        else:
            steps.append(
                _as_root(title, ("ip", "addr", "del", address.address, "dev", address.dev))
            )
    steps += bridge_steps
    before = record.ip_forward_before
    if before is not None:
        title = f"restore IPv4 forwarding to {before}"
        if facts.ip_forward == before:
            steps.append(Step(StepKind.DONE, title, note=f"{FORWARD_SYSCTL} is {before}"))
        elif "sysctl" not in facts.tools:
            steps.append(Step(StepKind.BLOCKED, title, note="sysctl is not on PATH"))
        else:
            steps.append(_as_root(title, ("sysctl", "-w", f"{FORWARD_SYSCTL}={before}")))
    if left.creates_anything:
        steps.append(
            Step(StepKind.WRITE, f"keep in {path} what was left", path=path, content=left.to_json())
        )
    else:
        steps.append(Step(StepKind.REMOVE, f"forget the record {path}", path=path))
    return steps
