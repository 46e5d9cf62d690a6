"""The documents of a NoCloud seed: the user's, completed with what cloud-init needs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from pluginspec import CloudInit, GuestNetwork
from volantd.cloudinit import (
    MAX_DOCUMENT_BYTES,
    CloudInitError,
    SeedDocuments,
    network_config,
    seed_documents,
)
from volantd.cloudinit.documents import read_document
from volantd.errors import VolantError

BRIDGED = GuestNetwork(
    mode="bridged", mac="52:54:00:AB:CD:01", address="192.168.127.10", prefix=24,
    gateway="192.168.127.1", dns=["192.168.127.1", "1.1.1.1"],
)  # fmt: skip
DHCP = GuestNetwork(mode="dhcp", mac="52:54:00:ab:cd:02")
NO_NIC = GuestNetwork(mode="isolated", mac=None)


def documents(network: GuestNetwork | None = None, **cloud_init: object) -> SeedDocuments:
    return seed_documents(
        CloudInit.model_validate(cloud_init), vm_id="42", hostname="web-1", network=network
    )


def test_nothing_given_gives_an_empty_cloud_config_and_the_vms_identity() -> None:
    seed = documents()
    assert seed.user_data == "#cloud-config\n"
    assert seed.meta_data == "instance-id: volant-42\nlocal-hostname: web-1\n"
    assert yaml.safe_load(seed.meta_data) == {
        "instance-id": "volant-42", "local-hostname": "web-1",
    }  # fmt: skip
    assert seed.network_config is None


def test_given_documents_are_kept_byte_for_byte_trailing_newlines_included() -> None:
    user_data = "#cloud-config\npackages: [htop]\n\n"
    network = "version: 2\nethernets: {}\n\n"
    seed = documents(BRIDGED, user_data={"content": user_data}, network_config={"content": network})
    assert seed.user_data == user_data
    assert seed.network_config == network  # the user's, not the generated one


def test_blank_documents_count_as_not_given() -> None:
    seed = documents(
        BRIDGED,
        user_data={"content": " \n"},
        meta_data={"content": ""},
        network_config={"content": "\n"},
    )
    assert seed.user_data == "#cloud-config\n"
    assert seed.meta_data == "instance-id: volant-42\nlocal-hostname: web-1\n"
    assert seed.network_config == network_config(BRIDGED)


def test_user_meta_data_keeps_its_keys_and_gains_the_missing_ones() -> None:
    given = "# mine\nlocal-hostname: custom\npublic-keys:\n  - ssh-ed25519 AAAA\n"
    seed = documents(meta_data={"content": given})
    assert seed.meta_data == given + "instance-id: volant-42\n"
    assert yaml.safe_load(seed.meta_data) == {
        "local-hostname": "custom",
        "public-keys": ["ssh-ed25519 AAAA"],
        "instance-id": "volant-42",
    }


def test_user_meta_data_with_both_keys_is_untouched_and_nested_keys_do_not_count() -> None:
    complete = "'instance-id': mine\nlocal-hostname:   box\n"
    assert documents(meta_data={"content": complete}).meta_data == complete
    nested = "extra:\n  instance-id: nested\nlocal-hostname: box"  # no trailing newline
    completed = documents(meta_data={"content": nested}).meta_data
    assert completed == nested + "\ninstance-id: volant-42\n"
    assert yaml.safe_load(completed)["instance-id"] == "volant-42"


def test_meta_data_given_as_a_table_is_completed_as_json() -> None:
    seed = documents(meta_data={"region": "lab", "local-hostname": "box"})
    assert json.loads(seed.meta_data) == {
        "region": "lab", "local-hostname": "box", "instance-id": "volant-42",
    }  # fmt: skip


def test_meta_data_in_a_yaml_flow_mapping_cannot_be_completed() -> None:
    with pytest.raises(CloudInitError, match=r"cloud_init\.meta_data: .*JSON or as a YAML block"):
        documents(meta_data={"content": "{region: lab}\n"})


def test_a_document_still_given_by_path_is_not_read_when_a_vm_starts(tmp_path: Path) -> None:
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text("#cloud-config\n")
    with pytest.raises(
        CloudInitError, match=r"^cloud_init\.user_data\.path: .* install the plugin"
    ):
        documents(user_data={"path": str(user_data)})


def test_document_files_are_read_whole_and_named_in_errors(tmp_path: Path) -> None:
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text("#cloud-config\nruncmd: [[echo, hi]]\n")
    assert read_document(user_data, "f") == "#cloud-config\nruncmd: [[echo, hi]]\n"
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CloudInitError) as raised:
        read_document(missing, "cloud_init.user_data.path")
    message = str(raised.value)
    assert message.startswith(f"cloud_init.user_data.path: cannot read {missing} (")
    assert "No such file or directory" in message and "give the document's content" in message
    assert isinstance(raised.value, VolantError)


def test_a_document_file_must_be_a_regular_utf8_file_of_at_most_1_mib(tmp_path: Path) -> None:
    with pytest.raises(CloudInitError, match=r"^f: .* regular"):
        read_document(tmp_path, "f")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CloudInitError, match=r"^f: .* regular file"):
        read_document(fifo, "f")  # refused, not waited on
    big = tmp_path / "big"
    big.write_bytes(b"#" * MAX_DOCUMENT_BYTES)
    assert len(read_document(big, "f")) == MAX_DOCUMENT_BYTES
    big.write_bytes(b"#" * (MAX_DOCUMENT_BYTES + 1))
    with pytest.raises(CloudInitError, match=r"^f: .* larger than 1"):
        read_document(big, "f")
    with pytest.raises(CloudInitError, match=r"^cloud_init\.user_data\.content is larger"):
        documents(user_data={"content": "#" * (MAX_DOCUMENT_BYTES + 1)})
    latin = tmp_path / "latin1"
    latin.write_bytes("#cloud-config\n# café\n".encode("latin-1"))
    with pytest.raises(CloudInitError, match=r"^f: .* not UTF-8"):
        read_document(latin, "f")


def test_only_nocloud_seeds_are_built() -> None:
    assert documents(datasource="nocloud").user_data == "#cloud-config\n"
    with pytest.raises(CloudInitError, match=r"^cloud_init\.datasource: .*NoCloud"):
        documents(datasource="ConfigDrive")


def test_a_static_nic_gets_its_address_route_and_name_servers_matched_by_mac() -> None:
    text = documents(BRIDGED).network_config
    assert text is not None
    assert yaml.safe_load(text) == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:ab:cd:01"},
                "set-name": "eth0",
                "addresses": ["192.168.127.10/24"],
                "routes": [{"to": "0.0.0.0/0", "via": "192.168.127.1"}],
                "nameservers": {"addresses": ["192.168.127.1", "1.1.1.1"]},
            }
        },
    }
    assert '"52:54:00:ab:cd:01"' in text  # quoted: YAML 1.1 reads 52:54:... as a number


def test_a_dhcp_nic_asks_by_dhcp_and_no_nic_gets_no_network_config() -> None:
    text = network_config(DHCP)
    assert text is not None
    assert yaml.safe_load(text) == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:ab:cd:02"}, "set-name": "eth0", "dhcp4": True,
            }
        },
    }  # fmt: skip
    assert network_config(NO_NIC) is None
    assert network_config(None) is None
    assert documents(NO_NIC).network_config is None


def test_a_user_mode_nic_without_gateway_or_dns_has_only_its_address() -> None:
    nic = GuestNetwork(mode="bridged", mac="52:54:00:00:00:01", address="10.1.0.5", prefix=16)
    text = network_config(nic)
    assert text is not None
    assert yaml.safe_load(text)["ethernets"]["eth0"] == {
        "match": {"macaddress": "52:54:00:00:00:01"},
        "set-name": "eth0",
        "addresses": ["10.1.0.5/16"],
    }


def test_identity_values_that_yaml_would_misread_are_quoted() -> None:
    seed = seed_documents(CloudInit(), vm_id="7", hostname="1234", network=None)
    assert yaml.safe_load(seed.meta_data) == {"instance-id": "volant-7", "local-hostname": "1234"}
    seed = seed_documents(CloudInit(), vm_id="7", hostname="no", network=None)
    assert yaml.safe_load(seed.meta_data)["local-hostname"] == "no"
