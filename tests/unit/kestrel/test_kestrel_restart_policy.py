"""Restart policy decisions and the capped exponential backoff."""

from __future__ import annotations

import pytest

from kestrel.config import RestartPolicy


def test_backoff_grows_by_the_multiplier_and_is_capped() -> None:
    policy = RestartPolicy("always", None, 100, 1000, 2.0)
    assert [policy.delay_ms(n) for n in range(6)] == [100, 200, 400, 800, 1000, 1000]
    assert policy.delay_ms(10_000) == 1000  # no overflow on long crash loops


def test_backoff_with_multiplier_one_is_constant() -> None:
    policy = RestartPolicy("on-failure", None, 250, 30_000, 1.0)
    assert {policy.delay_ms(n) for n in range(20)} == {250}


def test_zero_initial_backoff_restarts_at_once() -> None:
    assert RestartPolicy("always", None, 0, 0, 2.0).delay_ms(5) == 0


@pytest.mark.parametrize(
    ("policy", "exit_code", "expected"),
    [
        ("never", 1, False),
        ("never", -9, False),
        ("on-failure", 0, False),
        ("on-failure", 1, True),
        ("on-failure", -9, True),
        ("always", 0, True),
        ("always", 2, True),
    ],
)
def test_which_exits_are_restarted(policy: str, exit_code: int, expected: bool) -> None:
    assert RestartPolicy(policy).wants_restart(exit_code, restarts=0) is expected


def test_max_restarts_limits_restarts() -> None:
    policy = RestartPolicy("always", max_restarts=2)
    assert [policy.wants_restart(1, n) for n in range(4)] == [True, True, False, False]
    assert RestartPolicy("always", max_restarts=0).wants_restart(1, 0) is False
