"""Runs kestrel's DHCP client inside a test's client namespace and prints what happened as
JSON. Started by test_kestrel_dhcp_dnsmasq.py through ``ip netns exec``:

    python dhcp_driver.py obtain|configure|renew --interface IF --mac MAC [options]

``obtain``: a lease (or the error and how long it took); ``configure``: the report of
``configure_network`` in dhcp mode; ``renew``: a lease, applied to the interface, then
renewed (unicast) and rebound (broadcast).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "packages" / "kestrel" / "src"))

from kestrel.config import Network
from kestrel.dhcp import DHCPClient, DHCPError, Lease
from kestrel.netconfig import configure_network, set_ipv4_address


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["obtain", "configure", "renew"])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--hostname")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--resolv-conf")
    parser.add_argument("--dns", action="append", default=[])
    options = parser.parse_args()
    client = DHCPClient(options.interface, options.mac, hostname=options.hostname)
    result: dict[str, Any]
    started = time.monotonic()
    if options.action == "configure":
        network = Network("dhcp", options.interface, options.mac, None, None, None, ())
        report = configure_network(
            network._replace(dns=tuple(options.dns)),
            resolv_conf=options.resolv_conf,
            hostname=options.hostname,
            dhcp_timeout_s=options.timeout,
        )
        result = report.as_dict()
    else:
        try:
            lease = client.obtain_lease(options.timeout)
        except DHCPError as error:
            result = {"error": str(error)}
        else:
            result = {"lease": as_json(lease)}
            if options.action == "renew":
                set_ipv4_address(options.interface, lease.address, lease.prefix)
                result["renewed"] = as_json(client.renew_lease(lease))
                result["rebound"] = as_json(client.renew_lease(lease, rebind=True))
    result["elapsed_s"] = time.monotonic() - started
    json.dump(result, sys.stdout)


def as_json(lease: Lease) -> dict[str, Any]:
    return {**lease._asdict(), "dns": list(lease.dns)}


if __name__ == "__main__":
    main()
