"""VM states and the transitions the orchestrator makes between them."""

from __future__ import annotations

PENDING = "pending"  # recorded, never started
STARTING = "starting"  # boot media being prepared, VMM spawned, guest booting
RUNNING = "running"  # the agent answered (or the VMM runs, for plugins without an agent)
STOPPING = "stopping"
STOPPED = "stopped"
CRASHED = "crashed"  # the VMM died, or the guest never became ready

ALL = (PENDING, STARTING, RUNNING, STOPPING, STOPPED, CRASHED)
ACTIVE = frozenset({STARTING, RUNNING, STOPPING})
"""States in which a VMM process may exist."""
STARTABLE = frozenset({PENDING, STOPPED, CRASHED})
