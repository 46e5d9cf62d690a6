"""Property-based requests against volantd's OpenAPI document: no input is a server error.

Runs over the routes that boot nothing and fetch nothing: plugin installs are left out (a
generated ``source`` URL would make volantd fetch from arbitrary hosts), as is the event
stream (it never ends). No plugin is installed, so no generated VM can boot.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from support.volantd import Volantd, running_volantd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bare_volantd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Volantd]:
    with running_volantd(tmp_path_factory.mktemp("fuzz") / "home") as daemon:
        yield daemon


def operations(daemon: Volantd) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{daemon.url}/openapi.json")
    schema = schema.exclude(path_regex=r"^/api/v1/events").exclude(
        method="POST", path="/api/v1/plugins"
    )
    return [result.ok() for result in schema.get_all_operations()]


def test_no_request_makes_volantd_fail(bare_volantd: Volantd) -> None:
    found = operations(bare_volantd)
    assert len(found) > 20  # the document lists the API

    @given(data=st.data())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    def every_operation(data: st.DataObject) -> None:
        for operation in found:
            case = data.draw(operation.as_strategy(), label=operation.label)
            case.call_and_validate(
                base_url=bare_volantd.url, checks=[not_a_server_error], timeout=30
            )

    every_operation()
