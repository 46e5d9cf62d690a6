"""Running the host's programs to learn about the host (never to change it: steps do that)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence


def run_tool(
    command: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 30
) -> str:
    """stdout of `command`; OSError, CalledProcessError or TimeoutExpired when it fails."""
    result = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
    )
    return result.stdout
