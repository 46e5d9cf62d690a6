"""Checking POST /v1/exec bodies before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from kestrel.execute import ExecRequestError, ExecSpec, parse_exec_request


def test_a_full_request() -> None:
    spec = parse_exec_request(
        {
            "cmd": ["ls", "-l"],
            "env": {"A": "1"},
            "cwd": "/tmp",
            "timeout_s": 2,
            "stdin": "hi",
            "user": "app",
        }
    )
    assert spec == ExecSpec(["ls", "-l"], {"A": "1"}, "/tmp", 2.0, b"hi", "app")


def test_defaults_and_the_shell_form() -> None:
    assert parse_exec_request({"cmd": "echo $HOME"}) == ExecSpec(
        ["/bin/sh", "-c", "echo $HOME"], {}, "/", None, None, None
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "JSON object"),
        ({}, "cmd"),
        ({"cmd": []}, "cmd"),
        ({"cmd": [""]}, "cmd"),
        ({"cmd": ["a", 1]}, "cmd"),
        ({"cmd": "   "}, "cmd"),
        ({"cmd": ["a\x00b"]}, "NUL"),
        ({"cmd": ["a"], "env": {"A=B": "x"}}, "env"),
        ({"cmd": ["a"], "env": ["A"]}, "env"),
        ({"cmd": ["a"], "cwd": "tmp"}, "cwd"),
        ({"cmd": ["a"], "timeout_s": 0}, "timeout_s"),
        ({"cmd": ["a"], "timeout_s": True}, "timeout_s"),
        ({"cmd": ["a"], "stdin": 5}, "stdin"),
        ({"cmd": ["a"], "user": 0}, "user"),
        ({"cmd": ["a"], "shell": True}, r"unknown field\(s\): shell"),
    ],
)
def test_bad_requests_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(ExecRequestError, match=field):
        parse_exec_request(body)
