"""No input makes a parser raise anything but SpecError; what parses also round-trips."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pluginspec import (
    SpecError,
    apply_patch,
    parse_fledge_config,
    parse_manifest,
    parse_manifest_toml,
    parse_vm_config,
    parse_vm_config_patch,
    parse_vm_contract,
    validate_bytes,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "pluginspec"
EXAMPLES = int(os.environ.get("PLUGINSPEC_FUZZ_EXAMPLES", "150"))  # raise it for a long soak
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MANIFEST = json.loads((FIXTURES / "manifests" / "caddy.json").read_text())
RICH_MANIFEST = json.loads((FIXTURES / "manifests" / "fledge-generated.manifest.json").read_text())
VM_CONFIG = json.loads((FIXTURES / "vm" / "caddy-vm-config.json").read_text())
VM_JSON = json.loads((FIXTURES / "vm" / "vm.json").read_text())
FLEDGE = parse_fledge_config(
    (FIXTURES / "fledge" / "oci-python-flask.toml").read_text()
).model_dump(mode="json", exclude_none=True)
BASE_CONFIG = parse_vm_config(VM_CONFIG)

words = st.sampled_from(
    [
        "",
        " ",
        "x",
        "name",
        "http",
        "vsock",
        "ext4",
        "/",
        "/a/../b",
        "sha256:",
        "0",
        "-1",
        "https://h/p",
        "file://x",
        "ftp://h",
        "on-failure",
        "release",
        "initramfs",
        "\x00",
        "é",
    ]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    words,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), words), inner, max_size=4),
    ),
    max_leaves=20,
)


def only_spec_errors(parse: Callable[[Any], Any], data: Any) -> Any:
    try:
        return parse(data)
    except SpecError as exc:
        assert exc.issues and all(isinstance(i.message, str) and i.message for i in exc.issues)
        str(exc)  # renders
        return None


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += paths(value, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        candidates = paths(doc)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


JSON_PARSERS: list[Callable[[Any], Any]] = [
    parse_manifest,
    parse_vm_config,
    parse_vm_config_patch,
    parse_vm_contract,
    parse_fledge_config,
]


@FUZZ
@given(json_values)
def test_random_json_values(data: Any) -> None:
    for parse in JSON_PARSERS:
        only_spec_errors(parse, data)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_random_text_and_bytes(data: str | bytes) -> None:
    for parse in (parse_manifest, parse_manifest_toml, parse_fledge_config, parse_vm_config):
        only_spec_errors(parse, data)
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    for name in ("x.json", "x.toml", "fledge.toml", "vm.json", "noext"):
        assert validate_bytes(raw, name).lines()


@FUZZ
@given(st.one_of(mutated(MANIFEST), mutated(RICH_MANIFEST)))
def test_mutated_manifests(doc: dict[str, Any]) -> None:
    manifest = only_spec_errors(parse_manifest, doc)
    if manifest is not None:
        assert parse_manifest(manifest.to_json()) == manifest


@FUZZ
@given(mutated(VM_CONFIG))
def test_mutated_vm_configs(doc: dict[str, Any]) -> None:
    config = only_spec_errors(parse_vm_config, doc)
    if config is not None:
        assert parse_vm_config(config.model_dump(mode="json")) == config


@FUZZ
@given(mutated(VM_JSON))
def test_mutated_contracts(doc: dict[str, Any]) -> None:
    contract = only_spec_errors(parse_vm_contract, doc)
    if contract is not None:
        assert parse_vm_contract(contract.to_json()) == contract


@FUZZ
@given(mutated(FLEDGE))
def test_mutated_fledge_configs(doc: dict[str, Any]) -> None:
    config = only_spec_errors(parse_fledge_config, doc)
    if config is not None:
        assert parse_fledge_config(config.model_dump(mode="json", exclude_none=True)) == config


@FUZZ
@given(st.one_of(json_values, mutated({"resources": {"cpu_cores": 2}, **VM_CONFIG})))
def test_random_patches(data: Any) -> None:
    patch = only_spec_errors(parse_vm_config_patch, data)
    if patch is not None:
        only_spec_errors(lambda p: apply_patch(BASE_CONFIG, p), patch)
