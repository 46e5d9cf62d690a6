"""`volar setup --bridge` and `--teardown`: the settings, the planner with made-up facts, the
record of what setup made, and doctor's bridge row (real temporary PATH folders)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path

import pytest

from volar.host.bridge import plan_bridge, plan_teardown
from volar.host.checks import Check, Status, check_bridge, check_tool
from volar.host.network import (
    InvalidSetting,
    IptablesRule,
    Link,
    NetworkFacts,
    iptables_rules,
    network_settings,
    nft_script,
    nft_table,
    parse_links,
)
from volar.host.record import RecordedAddress, RecordError, SetupRecord, load_record
from volar.host.setup import SetupFacts, StepKind, plan_setup

SETTINGS = network_settings("vbr9", "10.213.0.0/24", None, env={})
HOST = ipaddress.IPv4Interface("10.213.0.1/24")
RECORD = Path("/var/lib/volant/host-setup.json")


def executable(folder: Path, name: str, script: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def fresh_host(**changes: object) -> NetworkFacts:
    """A host with one uplink outside the subnet, forwarding off, nft and iptables there."""
    eth0 = Link("eth0", up=True, addresses=(ipaddress.IPv4Interface("172.16.5.4/16"),))
    return replace(NetworkFacts(links=(eth0,), ip_forward="0"), **changes)


def set_up_host(**changes: object) -> NetworkFacts:
    """The host after setup: the bridge up with its address, forwarding on, the table as nft
    lists it (tabs, not the spaces setup writes)."""
    bridge = Link("vbr9", kind="bridge", up=True, addresses=(HOST,))
    listing = nft_table(SETTINGS).replace("    ", "\t")
    facts = fresh_host(ip_forward="1", nft_table=listing)
    return replace(facts, links=(*facts.links, bridge), **changes)


def pending(steps: list) -> list[tuple[str, ...]]:
    return [step.command for step in steps if step.kind is StepKind.RUN]


# Settings


def test_settings_default_to_volantds() -> None:
    settings = network_settings(env={})
    assert (settings.bridge, str(settings.subnet), str(settings.host_ip)) == (
        "vbr0",
        "192.168.127.0/24",
        "192.168.127.1",
    )
    assert settings.env() == {
        "VOLANT_BRIDGE": "vbr0",
        "VOLANT_SUBNET": "192.168.127.0/24",
        "VOLANT_HOST_IP": "192.168.127.1",
    }


def test_flags_win_over_the_environment_and_empty_variables_are_unset() -> None:
    env = {"VOLANT_BRIDGE": "br-env", "VOLANT_SUBNET": "10.9.0.0/16", "VOLANT_HOST_IP": ""}
    from_env = network_settings(env=env)
    assert (from_env.bridge, str(from_env.host_interface)) == ("br-env", "10.9.0.1/16")
    flags = network_settings("br-flag", "10.8.0.0/24", "10.8.0.254", env=env)
    assert flags.flags() == (
        "--bridge-name", "br-flag", "--subnet", "10.8.0.0/24", "--host-ip", "10.8.0.254",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (("a-very-long-name0", None, None), {}, "--bridge-name a-very-long-name0: a bridge name"),
        (("br 0", None, None), {}, "--bridge-name br 0: a bridge name is 1 to 15"),
        ((None, None, None), {"VOLANT_BRIDGE": "br/0"}, "VOLANT_BRIDGE=br/0: a bridge name"),
        ((None, "10.213.0.1/24", None), {}, "--subnet 10.213.0.1/24: not an IPv4 network"),
        ((None, "fd00::/64", None), {}, "--subnet fd00::/64: not an IPv4 network"),
        ((None, "10.213.0.0/31", None), {}, "--subnet 10.213.0.0/31: must be between /16 and /30"),
        ((None, "10.0.0.0/8", None), {}, "--subnet 10.0.0.0/8: must be between /16 and /30"),
        ((None, None, "10.213.0.7"), {}, "--host-ip 10.213.0.7: not in the subnet (the default"),
        ((None, "10.213.0.0/24", "nope"), {}, "--host-ip nope: not an IPv4 address"),
        ((None, "10.213.0.0/24", "10.213.0.0"), {}, "the subnet's network address"),
        ((None, "10.213.0.0/24", "10.213.0.255"), {}, "the subnet's broadcast address"),
        ((None, None, None), {"VOLANT_SUBNET": "10.1.0.0/16", "VOLANT_HOST_IP": "10.2.0.1"},
         "VOLANT_HOST_IP=10.2.0.1: not in the subnet (VOLANT_SUBNET=10.1.0.0/16); give a host "
         "address of it, such as 10.1.0.1"),
    ],
)  # fmt: skip
def test_bad_settings_name_their_flag_or_variable(
    arguments: tuple[str | None, str | None, str | None], env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidSetting) as caught:
        network_settings(*arguments, env=env)
    assert message in str(caught.value)


# Facts


def test_links_are_read_from_ip_json() -> None:
    data = [
        {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [
            {"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {"ifname": "vbr0", "flags": ["BROADCAST", "UP"], "linkinfo": {"info_kind": "bridge"},
         "addr_info": [{"family": "inet", "local": "10.213.0.1", "prefixlen": 24},
                       {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
        {"ifname": "vt-1", "flags": ["BROADCAST"], "master": "vbr0",
         "linkinfo": {"info_kind": "tun", "info_slave_kind": "bridge"}},
    ]  # fmt: skip
    lo, bridge, tap = parse_links(data)
    assert lo == Link("lo", up=True, addresses=(ipaddress.IPv4Interface("127.0.0.1/8"),))
    assert bridge == Link("vbr0", "bridge", True, None, (HOST,))
    assert tap == Link("vt-1", "tun", False, "vbr0")
    assert NetworkFacts(links=(lo, bridge, tap)).ports("vbr0") == ["vt-1"]


# Setup


def test_a_fresh_host_gets_everything_recorded_first() -> None:
    steps = plan_bridge(SETTINGS, fresh_host(), None, RECORD)
    assert all(step.pending for step in steps)
    record, *network = steps
    assert record.kind is StepKind.WRITE and record.path == RECORD and not record.needs_root
    assert all(step.needs_root for step in network)
    assert [step.shell().splitlines()[0] for step in network] == [
        "ip link add vbr9 type bridge",
        "ip addr replace 10.213.0.1/24 dev vbr9",
        "ip link set vbr9 up",
        "sysctl -w net.ipv4.ip_forward=1",
        "nft -f - <<'EOF'",
    ]
    nft = network[-1]
    assert nft.content == nft_script(SETTINGS)
    assert nft.content.startswith("table ip volant\ndelete table ip volant\ntable ip volant {")
    assert 'ip saddr 10.213.0.0/24 oifname != "vbr9" masquerade' in nft.content
    assert 'oifname "vbr9" ct status dnat accept' in nft.content
    assert json.loads(record.content) == {
        "format": 1,
        "written_by": "volar setup --bridge; `volar setup --teardown` removes what it lists",
        "bridges_created": ["vbr9"],
        "bridges_preexisting": [],
        "addresses": [{"address": "10.213.0.1/24", "dev": "vbr9"}],
        "ip_forward_before": "0",
        "nft_table": "ip volant",
        "iptables_rules": [],
    }


def test_a_set_up_host_has_nothing_to_do() -> None:
    record = SetupRecord.from_json(plan_bridge(SETTINGS, fresh_host(), None, RECORD)[0].content)
    steps = plan_bridge(SETTINGS, set_up_host(), record, RECORD)
    assert [step.kind for step in steps] == [StepKind.DONE] * 6
    assert "made by volar setup" in steps[1].note
    # set up by hand, without volar: nothing to do, nothing to record
    by_hand = plan_bridge(SETTINGS, set_up_host(), None, RECORD)
    assert not any(step.pending for step in by_hand)
    assert by_hand[0].kind is StepKind.SKIP and "teardown keeps it" in by_hand[1].note


def test_a_changed_table_is_applied_again() -> None:
    stale = set_up_host(nft_table=nft_table(SETTINGS).replace("masquerade", "accept"))
    assert [
        step.command for step in plan_bridge(SETTINGS, stale, None, RECORD) if step.pending
    ] == [
        (),  # the record: the table is volar's now
        ("nft", "-f", "-"),
    ]


def test_after_a_reboot_the_record_keeps_what_the_first_run_made() -> None:
    first = plan_bridge(SETTINGS, fresh_host(), None, RECORD)[0].content
    record = SetupRecord.from_json(first)
    # bridge, forwarding and table are gone; forwarding is 0 again
    steps = plan_bridge(SETTINGS, fresh_host(), record, RECORD)
    assert steps[0].kind is StepKind.DONE and len(pending(steps)) == 5
    # a bridge that someone removed and setup made again is still setup's; forwarding was
    # already on when it came back: the first value (0) is still the one to restore
    later = plan_bridge(SETTINGS, fresh_host(ip_forward="1"), record, RECORD)
    assert later[0].kind is StepKind.DONE
    assert SetupRecord.from_json(first).merged(SetupRecord(ip_forward_before="1")) == record


def test_a_bridge_that_was_there_is_recorded_as_kept() -> None:
    existing = Link("vbr9", kind="bridge", up=False)
    facts = fresh_host(links=(existing,), ip_forward="1")
    steps = plan_bridge(SETTINGS, facts, None, RECORD)
    assert pending(steps) == [
        ("ip", "addr", "replace", "10.213.0.1/24", "dev", "vbr9"),
        ("ip", "link", "set", "vbr9", "up"),
        ("nft", "-f", "-"),
    ]
    record = SetupRecord.from_json(steps[0].content)
    assert record.bridges_created == () and record.bridges_preexisting == ("vbr9",)
    assert record.addresses == (RecordedAddress("10.213.0.1/24", "vbr9"),)
    assert record.ip_forward_before is None


def test_without_nft_iptables_rules_are_added_each_when_missing() -> None:
    rules = iptables_rules(SETTINGS)
    masquerade = rules[0]
    assert masquerade.command("-A") == (
        "iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", "10.213.0.0/24", "!", "-o",
        "vbr9", "-m", "comment", "--comment", "volant", "-j", "MASQUERADE",
    )  # fmt: skip
    assert masquerade.summary == "nat POSTROUTING -s 10.213.0.0/24 ! -o vbr9 -j MASQUERADE"
    facts = set_up_host(tools=frozenset({"ip", "sysctl", "iptables"}), nft_table=None,
                        iptables_present=frozenset(rules[:2]))  # fmt: skip
    steps = plan_bridge(SETTINGS, facts, None, RECORD)
    assert pending(steps) == [rule.command("-A") for rule in rules[2:]]
    assert not any(step.command[:1] == ("nft",) for step in steps)
    assert SetupRecord.from_json(steps[0].content).iptables_rules == tuple(sorted(rules[2:]))


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (fresh_host(links=(Link("eth1", addresses=(ipaddress.IPv4Interface("10.213.0.9/16"),)),)),
         "eth1 already has 10.213.0.9/16, in the subnet 10.213.0.0/24: pick another --subnet"),
        (fresh_host(links=(Link("vbr9", kind="veth"),)),
         "vbr9 exists and is a veth, not a bridge: pick another --bridge-name"),
        (fresh_host(links=(Link("vbr9", "bridge", addresses=(
            ipaddress.IPv4Interface("10.213.0.5/24"),)),)),
         "vbr9 already has 10.213.0.5/24, not 10.213.0.1/24: pass --host-ip 10.213.0.5"),
        (fresh_host(tools=frozenset({"ip", "sysctl"})), "neither nft nor iptables"),
        (fresh_host(tools=frozenset({"ip", "nft"})), "sysctl is not on PATH"),
        (fresh_host(tools=frozenset({"nft", "sysctl"})), "apt-get install iproute2"),
    ],
)  # fmt: skip
def test_what_setup_cannot_fix_blocks_it(facts: NetworkFacts, message: str) -> None:
    steps = plan_bridge(SETTINGS, facts, None, RECORD)
    assert all(step.kind is StepKind.BLOCKED for step in steps)
    assert any(message in step.note for step in steps), [step.note for step in steps]


# The rest of setup


ALL_OK = [Check("volantd", Status.OK, True, ""), Check("kernel", Status.OK, True, "")]


def setup(**changes: object) -> SetupFacts:
    base = SetupFacts(volantd="/opt/volant/bin/volantd", home="/var/lib/volant",
                      kernel_fix=None, apt_lists_ready=True, network=SETTINGS,
                      network_facts=fresh_host(), record_path=RECORD,
                      volar="/opt/volant/bin/volar")  # fmt: skip
    return replace(base, **changes)


def test_bridge_steps_come_before_the_unit_which_sets_them_up_at_each_start(
    tmp_path: Path,
) -> None:
    unit = tmp_path / "volantd.service"
    steps = plan_setup(ALL_OK, setup(systemd=True, unit_path=unit, systemd_running=True,
                                     env=SETTINGS.env()))  # fmt: skip
    titles = [step.title for step in steps]
    assert titles.index("create bridge vbr9") < titles.index(f"write {unit}")
    content = next(step.content for step in steps if step.path == unit)
    assert "Environment=VOLANT_BRIDGE=vbr9" in content
    assert "Environment=VOLANT_SUBNET=10.213.0.0/24" in content
    assert "Environment=VOLANT_HOST_IP=10.213.0.1" in content
    assert (
        "ExecStartPre=/opt/volant/bin/volar setup --bridge-only --yes --bridge-name vbr9 "
        "--subnet 10.213.0.0/24 --host-ip 10.213.0.1\n"
    ) in content
    assert content.index("ExecStartPre=") < content.index("ExecStart=")


def test_nat_uses_the_nft_that_setup_installs_first() -> None:
    checks = [*ALL_OK, check_tool("nft", "nft", "NAT", path="/nonexistent")]
    no_nft = fresh_host(tools=frozenset({"ip", "sysctl", "iptables"}))
    steps = plan_setup(checks, setup(network_facts=no_nft))
    install = next(step for step in steps if step.command[:2] == ("apt-get", "install"))
    assert "nftables" in install.command
    assert ("nft", "-f", "-") in pending(steps)
    assert not any(step.command[:1] == ("iptables",) for step in steps)


def test_without_bridge_setup_plans_no_network() -> None:
    steps = plan_setup(ALL_OK, setup(network=None))
    assert not any(step.needs_root for step in steps)
    assert not any("bridge" in step.title for step in steps)


# Teardown


def made_everything() -> SetupRecord:
    return SetupRecord.from_json(plan_bridge(SETTINGS, fresh_host(), None, RECORD)[0].content)


def test_teardown_removes_what_setup_made_and_then_the_record() -> None:
    steps = plan_teardown(made_everything(), set_up_host(), RECORD)
    assert [step.shell() for step in steps] == [
        "nft delete table ip volant",
        "# remove address 10.213.0.1/24 from vbr9: goes with bridge vbr9",
        "ip link delete vbr9 type bridge",
        "sysctl -w net.ipv4.ip_forward=0",
        f"rm -f {RECORD}",
    ]
    assert steps[-1].kind is StepKind.REMOVE and not steps[-1].needs_root


def test_teardown_keeps_a_bridge_that_was_there_and_skips_what_is_gone() -> None:
    record = SetupRecord(bridges_preexisting=("vbr9",),
                         addresses=(RecordedAddress("10.213.0.1/24", "vbr9"),),
                         nft_table="ip volant", ip_forward_before="0")  # fmt: skip
    steps = plan_teardown(record, set_up_host(nft_table=None, ip_forward="0"), RECORD)
    assert [(step.kind, step.title, step.command) for step in steps] == [
        (StepKind.DONE, "remove nftables table ip volant", ()),
        (StepKind.RUN, "remove address 10.213.0.1/24 from vbr9",
         ("ip", "addr", "del", "10.213.0.1/24", "dev", "vbr9")),
        (StepKind.SKIP, "bridge vbr9", ()),
        (StepKind.DONE, "restore IPv4 forwarding to 0", ()),
        (StepKind.REMOVE, f"forget the record {RECORD}", ()),
    ]  # fmt: skip
    assert steps[2].note == "was there before volar setup: kept"


def test_teardown_leaves_a_bridge_with_taps_and_keeps_it_recorded() -> None:
    facts = set_up_host()
    facts = replace(facts, links=(*facts.links, Link("vt-abc", "tun", True, "vbr9")))
    steps = plan_teardown(made_everything(), facts, RECORD)
    left = next(step for step in steps if step.title == "delete bridge vbr9")
    assert left.kind is StepKind.SKIP and "vt-abc still attached" in left.note
    assert ("ip", "addr", "del", "10.213.0.1/24", "dev", "vbr9") in pending(steps)
    assert steps[-1].kind is StepKind.WRITE and steps[-1].path == RECORD
    assert SetupRecord.from_json(steps[-1].content) == SetupRecord(bridges_created=("vbr9",))


def test_teardown_of_iptables_rules_deletes_those_still_there() -> None:
    rules = iptables_rules(SETTINGS)
    record = SetupRecord(iptables_rules=rules)
    facts = fresh_host(tools=frozenset({"ip", "iptables"}), iptables_present=frozenset(rules[1:]))
    steps = plan_teardown(record, facts, RECORD)
    assert sorted(pending(steps)) == sorted(rule.command("-D") for rule in rules[1:])
    gone = next(step for step in steps if rules[0].summary in step.title)
    assert gone.kind is StepKind.DONE
    blocked = plan_teardown(record, fresh_host(tools=frozenset({"ip"})), RECORD)
    assert {step.kind for step in blocked[:-1]} == {StepKind.BLOCKED}


# The record file


def test_the_record_round_trips_and_merges(tmp_path: Path) -> None:
    rule = IptablesRule("nat", "POSTROUTING", ("-j", "MASQUERADE"))
    first = SetupRecord(bridges_created=("vbr0",), ip_forward_before="0", iptables_rules=(rule,))
    second = SetupRecord(bridges_preexisting=("vbr0", "br1"), ip_forward_before="1",
                         nft_table="ip volant")  # fmt: skip
    merged = first.merged(second)
    assert merged == SetupRecord(bridges_created=("vbr0",), bridges_preexisting=("br1",),
                                 ip_forward_before="0", nft_table="ip volant",
                                 iptables_rules=(rule,))  # fmt: skip
    path = tmp_path / "host-setup.json"
    assert load_record(path) is None
    path.write_text(merged.to_json())
    assert load_record(path) == merged
    path.write_text('{"format": 99}')
    with pytest.raises(RecordError, match="is not a record of `volar setup --bridge`"):
        load_record(path)


# doctor


def test_doctor_bridge_row(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"PATH": str(tmp_path), "VOLANT_HOME": str(home)}
    missing = check_bridge(str(tmp_path), env)
    assert missing.status is Status.WARN and missing.packages == ("iproute2",)
    executable(tmp_path, "ip", "echo '[]'")
    absent = check_bridge(str(tmp_path), env)
    assert absent.status is Status.OK and "not set up" in absent.detail and not absent.required
    asked = check_bridge(str(tmp_path), {**env, "VOLANT_BRIDGE": "vbr0"})
    assert asked.status is Status.WARN and asked.fix == "volar setup --bridge"
    down = [{"ifname": "vbr0", "flags": ["BROADCAST"], "linkinfo": {"info_kind": "bridge"}}]
    executable(tmp_path, "ip", f"echo '{json.dumps(down)}'")
    row = check_bridge(str(tmp_path), env)
    assert row.status is Status.WARN
    assert "vbr0 is down, lacks the address 192.168.127.1/24" in row.detail


def test_doctor_nft_row_mentions_the_iptables_fallback(tmp_path: Path) -> None:
    executable(tmp_path, "iptables", "exit 0")
    row = check_tool("nft", "nft", "NAT", str(tmp_path))
    assert row.status is Status.WARN and row.packages == ("nftables",)
    assert "would use" in row.detail and str(tmp_path / "iptables") in row.detail
    executable(tmp_path, "nft", "exit 0")
    assert check_tool("nft", "nft", "NAT", str(tmp_path)).status is Status.OK
