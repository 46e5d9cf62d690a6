"""Real registries for fledge's OCI tests, one of each kind per session, on 127.0.0.1.

Images come from support.oci_images; push them with ``registry.push(repo, image)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.registry import Registry, run_registry


@pytest.fixture(scope="session")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry over plain HTTP without authentication."""
    with run_registry(tmp_path_factory.mktemp("registry-open")) as registry:
        yield registry


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with htpasswd (Basic) authentication; ``registry.creds`` logs in."""
    with run_registry(tmp_path_factory.mktemp("registry-basic"), auth="basic") as registry:
        yield registry


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with Bearer token authentication (``registry.token_server``)."""
    with run_registry(tmp_path_factory.mktemp("registry-token"), auth="token") as registry:
        yield registry


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry over HTTPS with a self-signed certificate (``registry.ca_cert``)."""
    with run_registry(tmp_path_factory.mktemp("registry-tls"), tls=True) as registry:
        yield registry
